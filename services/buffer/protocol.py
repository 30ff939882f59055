"""The experience buffer's seam: what actors and the learner may ask of it, whatever stores the groups.

Semantics shared by every implementation (one test-suite runs against each):
- `put` appends fresh groups to a stream; each is delivered to the learner exactly once, and stays
  pending (redelivered after a crash) until `ack`. `put` reports the unconsumed backlog and whether it
  is at the high-water mark, so actors pause instead of generating data that would go stale.
- `sample` draws a mixed batch: fresh groups within the staleness bound, the rest from the replay pool
  (consumed fresh groups) and offline data. Too-stale fresh groups are moved to replay or dropped.
- `ack` settles fresh deliveries after the learner step that used them; acked groups join the replay
  pool, which evicts its oldest groups beyond its capacity.
"""

from dataclasses import dataclass, field
from typing import Protocol

from services.schemas import ScoredGroup


@dataclass(frozen=True)
class PutResult:
    """`backlog` fresh groups are not yet delivered; `paused` means actors should wait."""

    accepted: int
    backlog: int
    paused: bool


@dataclass(frozen=True)
class SampledBatch:
    """A mixed batch. `delivery_ids` are the fresh groups to `ack` after the step that used them."""

    groups: list[ScoredGroup]
    delivery_ids: list[str]
    num_fresh: int
    num_replayed: int
    stale_moved: int = 0
    stale_dropped: int = 0
    staleness: list[int] = field(default_factory=list)

    @property
    def on_policy_fraction(self) -> float:
        return self.num_fresh / len(self.groups) if self.groups else 0.0


@dataclass(frozen=True)
class BufferStats:
    backlog: int
    pending: int
    replay_size: int
    offline_size: int
    learner_version: int
    staleness_histogram: dict[int, int]
    counters: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return {
            "backlog": self.backlog,
            "pending": self.pending,
            "replay_size": self.replay_size,
            "offline_size": self.offline_size,
            "learner_version": self.learner_version,
            "staleness_histogram": {str(k): v for k, v in sorted(self.staleness_histogram.items())},
            "counters": dict(sorted(self.counters.items())),
        }


COUNTERS = (
    "put",
    "put_offline",
    "delivered",
    "redelivered",
    "acked",
    "replayed",
    "stale_moved",
    "stale_dropped",
    "evicted",
    "paused_signals",
    "connection_retries",
)


class ExperienceBuffer(Protocol):
    def put(self, groups: list[ScoredGroup]) -> PutResult: ...

    def put_offline(self, groups: list[ScoredGroup]) -> int: ...

    def recover(self) -> int: ...

    def sample(
        self, batch_groups: int, learner_version: int, on_policy_only: bool = False
    ) -> SampledBatch: ...

    def ack(self, delivery_ids: list[str]) -> int: ...

    def set_learner_version(self, version: int) -> None: ...

    def learner_version(self) -> int: ...

    def stats(self) -> BufferStats: ...

    def close(self) -> None: ...
