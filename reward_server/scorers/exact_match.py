"""`exact_match`: extract the answer from the completion with a regex and compare it with `reference`.

No match is a wrong answer (score 0.0), but an item without a reference, or a numeric comparison
against a reference that is not a number, is an error: there is nothing to compare with.
"""

import math
import re
from collections.abc import Sequence

from reward_server.scorers.base import ScoreItem, ScorerResult
from services.config.reward import ExactMatchScorerConfig


class ExactMatchScorer:
    """1.0 when the extracted answer equals the reference (as strings, or as numbers within a tolerance)."""

    def __init__(self, config: ExactMatchScorerConfig) -> None:
        self.name = config.name
        self.pattern = re.compile(config.pattern)
        self.group = 1 if self.pattern.groups else 0
        self.tolerance = config.numeric_tolerance

    async def score(self, items: Sequence[ScoreItem]) -> list[ScorerResult]:
        # Pure CPU and microseconds per item: running it on the loop is cheaper than a thread hop.
        return [self.score_one(item) for item in items]

    def score_one(self, item: ScoreItem) -> ScorerResult:
        if item.reference is None:
            return ScorerResult.failed("the item has no reference to compare with")
        if self.tolerance is None:
            return ScorerResult(float(self.extract(item.completion) == item.reference.strip()))
        reference = parse_number(item.reference)
        if reference is None:
            return ScorerResult.failed(f"reference {item.reference!r} is not a number")
        answer = self.extract(item.completion)
        value = None if answer is None else parse_number(answer)
        return ScorerResult(float(value is not None and abs(value - reference) <= self.tolerance))

    def extract(self, completion: str) -> str | None:
        """The first group of the first match (the whole match when the pattern has no group); None
        when nothing matches, which no reference equals."""
        match = self.pattern.search(completion)
        if match is None:
            return None
        answer = match.group(self.group)
        return None if answer is None else answer.strip()

    async def close(self) -> None:
        return None


def parse_number(text: str) -> float | None:
    """A finite float from text such as "42", "-3.5", "1e3" or "1,000"; None when it is not one."""
    try:
        value = float(text)  # accepts surrounding whitespace
    except ValueError:
        try:
            value = float(text.replace(",", ""))
        except ValueError:
            return None
    return value if math.isfinite(value) else None
