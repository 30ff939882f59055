"""The experience buffer's seam: what actors and the learner may ask of it, whatever stores the groups.

Semantics shared by every implementation (one test-suite runs against each):
- `put` appends fresh groups to a stream, once even when a lost reply makes the client retry; each
  is delivered to the learner exactly once, and stays pending (redelivered after a crash) until
  `ack`. `put` reports the unconsumed backlog and whether it is at the high-water mark, so actors
  pause instead of generating data that would go stale, and the learner's version.
- `sample` draws a mixed batch (rules in mixing.py): fresh groups within the staleness bound, the rest
  from the replay pool (consumed fresh groups) and offline data. Too-stale fresh groups met on the
  way are moved to replay or dropped, by `stale_policy`.
- `ack` settles fresh deliveries once a learner checkpoint holds the step that used them (until then
  they stay pending, never handed out again to the learner holding them); acked groups join the
  replay pool, which evicts its oldest groups beyond `replay_capacity`. Acking twice is a no-op.
- `recover` (a restarted learner calls it; the Redis buffer also does on its first `sample`) hands
  out again the groups delivered before a crash and never acked.
"""

from dataclasses import dataclass, field
from typing import Protocol

from core.config.loader import ConfigError
from core.schemas import ScoredGroup


# Both refusals are ConfigErrors: the config asks what the server or the namespace cannot give, and the
# `tandem` command prints a ConfigError as one line with exit code 2 instead of a traceback.
class DurabilityError(ConfigError):
    """The Redis server cannot keep the promise `buffer.durability` asks of it; the message names what
    to set. Raised when the buffer opens, never half-way through a run."""


class NamespaceInUseError(ConfigError):
    """A fresh run (no `--resume`) met a buffer namespace holding a previous run's data, which it would
    otherwise train on. The message names the namespace and how to empty it."""


class UnconfirmedPutError(RuntimeError):
    """Redis stored a put but did not confirm its AOF fsync in time (WAITAOF): it may not survive a crash."""


@dataclass(frozen=True)
class PutResult:
    """`accepted` groups stored; `backlog` fresh groups not yet delivered; `paused` means the backlog
    is at `high_water` and actors should wait. `learner_version` is the learner's policy version at
    the time, so an actor can judge its own staleness without another round trip."""

    accepted: int
    backlog: int
    paused: bool
    learner_version: int  # required: a default of 0 would hide staleness from the actors


@dataclass(frozen=True)
class SampledBatch:
    """A mixed batch: fresh groups first, then replayed ones. `delivery_ids` are the fresh groups to
    `ack` after the step that used them; `staleness[i] = learner_version - groups[i].policy_version`."""

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

    @classmethod
    def mix(
        cls,
        fresh: list[ScoredGroup],
        replayed: list[ScoredGroup],
        delivery_ids: list[str],
        learner_version: int,
        stale_moved: int = 0,
        stale_dropped: int = 0,
    ) -> "SampledBatch":
        """Fresh groups first, then the replayed/offline ones, with each group's staleness."""
        groups = fresh + replayed
        return cls(
            groups=groups,
            delivery_ids=delivery_ids,
            num_fresh=len(fresh),
            num_replayed=len(replayed),
            stale_moved=stale_moved,
            stale_dropped=stale_dropped,
            staleness=[learner_version - group.policy_version for group in groups],
        )


@dataclass(frozen=True)
class BufferStats:
    """`depth` = fresh groups held (`backlog` undelivered + `pending` delivered, unacked);
    `staleness_histogram` maps `learner_version - policy_version` -> count over those `depth` groups."""

    depth: int
    backlog: int
    pending: int
    replay_size: int
    offline_size: int
    learner_version: int
    staleness_histogram: dict[int, int]
    counters: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return {
            "depth": self.depth,
            "backlog": self.backlog,
            "pending": self.pending,
            "replay_size": self.replay_size,
            "offline_size": self.offline_size,
            "learner_version": self.learner_version,
            "staleness_histogram": {str(k): v for k, v in sorted(self.staleness_histogram.items())},
            "counters": dict(sorted(self.counters.items())),
        }


COUNTERS = (
    "put",  # fresh groups accepted
    "put_offline",
    "sampled",  # groups handed to the learner, fresh and replayed
    "delivered",  # of which fresh
    "replayed",  # of which from replay/offline
    "redelivered",  # pending groups handed out again by recover()
    "acked",
    "stale_moved",
    "stale_dropped",
    "evicted",  # replay groups pushed out by newer ones
    "paused_signals",  # puts answered with paused=True
    "connection_retries",  # Redis only, this client's failed attempts since it started
)


class ExperienceBuffer(Protocol):
    def put(self, groups: list[ScoredGroup]) -> PutResult:
        """Append fresh groups; returns once they are stored (in Redis: acknowledged by the server)."""
        ...

    def put_offline(self, groups: list[ScoredGroup]) -> int:
        """Add off-policy groups to the offline pool, all or none; returns how many."""
        ...

    def sample(self, batch_groups: int, learner_version: int, on_policy_only: bool = False) -> SampledBatch:
        """Up to `batch_groups` groups mixed by mixing.plan_batch; fewer only when the buffer runs dry."""
        ...

    def ack(self, delivery_ids: list[str]) -> int:
        """Settle deliveries once a checkpoint holds the step that used them; returns how many were still
        pending."""
        ...

    def recover(self) -> int:
        """Queue the groups delivered and never acked (a learner crash) to be sampled first again."""
        ...

    def claim_namespace(self, resume: bool, owner: str = "") -> None:
        """Mark the namespace as the run `owner`'s, before its learner starts. A fresh run (`resume`
        False) raises NamespaceInUseError when a learner has used the namespace before (a run marker,
        replayed or pending groups, a learner version): it would train on that run's groups. Offline
        groups (`tandem ingest`) and fresh groups not yet delivered to any learner (actors started
        first) are allowed. A resumed run takes the namespace over."""
        ...

    def set_learner_version(self, version: int) -> None: ...

    def learner_version(self) -> int: ...

    def stats(self) -> BufferStats: ...

    def close(self) -> None: ...
