"""`python`: a user function `fn(prompt, completion, item) -> float`, named by its import path.

The function is imported at start-up (a typo fails the server start, not every request) and called
in a worker thread, so a slow function does not stall the event loop. An exception or a value that
is not a number is that item's error; other items of the batch are unaffected.
"""

import asyncio
import importlib
import numbers
from collections.abc import Callable, Sequence

from core.config.reward import PythonScorerConfig
from reward_server.scorers.base import ScoreItem, ScorerResult

RewardFunction = Callable[[str, str, ScoreItem], float]


class PythonScorer:
    """Calls the configured function once per item, in a thread, turning exceptions into item errors."""

    def __init__(self, config: PythonScorerConfig) -> None:
        self.name = config.name
        self.function = import_function(config.function)

    async def score(self, items: Sequence[ScoreItem]) -> list[ScorerResult]:
        # One thread hop for the whole batch: per-item hops would cost more than cheap functions.
        return await asyncio.to_thread(lambda: [self.score_one(item) for item in items])

    def score_one(self, item: ScoreItem) -> ScorerResult:
        try:
            value = self.function(item.prompt, item.completion, item)
        except Exception as error:
            return ScorerResult.failed(f"{type(error).__name__}: {error}")
        # numbers.Real admits numpy scalars; a bool is more likely a bug than a score.
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return ScorerResult.failed(f"returned {type(value).__name__} {value!r}, not a number")
        return ScorerResult.ok(float(value))

    async def close(self) -> None:
        return None


def import_function(path: str) -> RewardFunction:
    """Resolve `package.module:function`; a clear error names the part that is missing."""
    module_name, function_name = path.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"python scorer: cannot import module {module_name!r}: {error}") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ValueError(f"python scorer: {module_name} has no function {function_name!r}")
    return function
