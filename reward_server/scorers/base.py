"""The seam every scorer implements: score a batch of items, one result per item, failures explicit.

A scorer never turns a failure into a number: it returns status "error" or "timeout" with a message,
and the server reports that item as failed (no silent 0).
"""

from collections.abc import Sequence
from typing import Any, Literal, Protocol

import msgspec

ScoreStatus = Literal["ok", "error", "timeout"]


# A msgspec Struct, so /v1/score decodes its JSON body straight into these (reward_server/wire.py:
# about 5x faster than pydantic, the largest cost per item). Unknown fields are errors, like the
# documented pydantic model (models.ScoreItemIn), so a misspelt `refrence` is caught, not ignored.
class ScoreItem(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One completion to score, with what scorers may check it against."""

    prompt: str
    completion: str
    reference: str | None = None
    tests: list[str] | None = None
    metadata: dict[str, Any] = {}  # msgspec gives each instance its own empty dict


# One is built per item and scorer on every request: a msgspec Struct builds in a third of a slotted
# dataclass's time (gc=False: it holds no containers, so it can be in no reference cycle). Frozen, so
# a scorer with few possible verdicts may hand out the same instance for many items.
class ScorerResult(msgspec.Struct, frozen=True, gc=False):
    """One scorer's verdict on one item: a finite score when status is "ok", else None and an error."""

    score: float | None
    status: ScoreStatus = "ok"
    error: str | None = None

    @classmethod
    def ok(cls, score: float) -> "ScorerResult":
        return cls(score=score)

    @classmethod
    def failed(cls, error: str, status: ScoreStatus = "error") -> "ScorerResult":
        return cls(score=None, status=status, error=error)


class Scorer(Protocol):
    """A named scorer. `score` is async so I/O-bound scorers overlap and CPU-bound ones move off the loop.

    Optional: a class attribute `never_yields = True` says `score` finishes without awaiting (pure,
    fast CPU work on the loop, as exact_match): the server then arms no timeout around it, which could
    not fire anyway. Results are checked against the contract either way."""

    name: str

    async def score(self, items: Sequence[ScoreItem]) -> list[ScorerResult]:
        """Score `items`; return exactly one result per item, in order."""
        ...

    async def close(self) -> None:
        """Release clients, thread pools and models."""
        ...
