"""The seam every scorer implements: score a batch of items, one result per item, failures explicit.

A scorer never turns a failure into a number: it returns status "error" or "timeout" with a message,
and the server reports that item as failed (no silent 0).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

ScoreStatus = Literal["ok", "error", "timeout"]


@dataclass(frozen=True, slots=True)
class ScoreItem:
    """One completion to score, with what scorers may check it against."""

    prompt: str
    completion: str
    reference: str | None = None
    tests: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


# Not frozen: a frozen dataclass costs three times as much to build, and one is built per item and
# scorer on every request (benchmarks/reward_bench.py). Nothing mutates a result once returned.
@dataclass(slots=True)
class ScorerResult:
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
    """A named scorer. `score` is async so I/O-bound scorers overlap and CPU-bound ones move off the loop."""

    name: str

    async def score(self, items: Sequence[ScoreItem]) -> list[ScorerResult]:
        """Score `items`; return exactly one result per item, in order."""
        ...

    async def close(self) -> None:
        """Release clients, thread pools and models."""
        ...
