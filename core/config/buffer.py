"""`buffer`: the experience buffer between actors and learner, and its staleness-aware mixing."""

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from core.config.base import Section


class BufferConfig(Section):
    kind: Literal["memory", "redis"] = "memory"
    """`memory`: in-process, served from a Ray actor (embedded default). `redis`: durable and shared."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis connection URL (for `kind: redis`)."""

    durability: Literal["none", "everysec", "always"] = "none"
    """Redis: what a returned `put` promises, checked against the server when the buffer opens (it
    refuses to start, naming the setting to change, when the server cannot keep the promise).
    `always`: the groups are fsynced to the append-only file before `put` returns, so a group an actor
    was told is stored survives `kill -9` of Redis or a power cut: on Redis >= 7.2 with `appendonly
    yes`, each put waits for WAITAOF; on older servers it needs `appendonly yes` + `appendfsync always`
    (Redis then fsyncs before it replies). `everysec`: `appendonly yes` with `appendfsync everysec`
    or `always` (a crash may lose the last second of puts). `none`: nothing is checked. Only
    `none` is allowed with `kind: memory`, which keeps nothing across the driver's death."""

    namespace: str = Field("tandem", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    """Key prefix in Redis, and name of the Ray actor serving the memory buffer, so several runs can
    share one server or cluster."""

    on_policy_fraction: float = Field(0.75, ge=0, le=1)
    """Fraction of each batch's groups drawn from fresh groups within `max_staleness`; the rest from
    the replay pool and offline data."""

    offline_fraction: float = Field(1.0, ge=0, le=1)
    """At most floor(offline_fraction * batch_groups) of each batch's groups come from the offline pool;
    the rest of the non-fresh share comes from the replay pool, and when that runs short, fresh groups
    fill in before offline ones pass the cap. Within the cap, replay and offline groups are drawn
    uniformly from both pools together, so at 1.0 (no cap) a large offline file takes nearly all of
    the non-fresh share. 0 never samples offline data (RLOO with importance sampling needs that: offline
    groups have no behaviour log-probs)."""

    max_staleness: int = Field(2, ge=0)
    """A fresh group counts as on-policy while `learner_version - policy_version <= max_staleness`."""

    stale_policy: Literal["replay", "drop"] = "replay"
    """What happens to fresh groups that became too stale: moved to the replay pool or dropped
    (counted either way)."""

    replay_capacity: int = Field(4096, ge=0)
    """Groups kept in the replay pool; the oldest are evicted first."""

    high_water: int = Field(64, ge=1)
    """Unconsumed fresh groups at which `put` tells actors to pause."""

    claim_idle_s: float = Field(0.0, ge=0)
    """Redis: when a learner recovers, it also claims fresh groups delivered to *another* consumer
    name and unacknowledged for this long (a learner that died and came back under a new name).
    0 claims only the recovering consumer's own pending groups. Keep it above the longest learner
    step, or a slow but live learner's groups are handed out twice."""

    offline_files: list[Path] = Field(default_factory=list)
    """Offline JSONL files (the `tandem ingest` format) that `tandem train` loads into the offline
    pool at start, when that pool is empty (so a resumed run does not load them twice)."""

    skip_uniform_groups: bool = False
    """Do not train on a group whose scorer rewards are all equal (every sample right, or every one
    wrong); it is counted in the step metrics' `skipped` as `uniform_rewards`. Such a group carries no
    reward signal: for `rloo` its reward advantage is zero, leaving only the KL-shaping part
    (-beta * h around its leave-one-out mean), so on-policy it mostly costs compute, and turning this
    on is the usual choice. For `copg` and `agro` the KL-regularisation term of such a group still
    pulls the policy towards the reference (and is what makes them converge off-policy), so skipping
    it changes the objective being optimised; leave it off there unless compute matters more."""

    @model_validator(mode="after")
    def _durability_needs_redis(self) -> "BufferConfig":
        # A promise the in-process buffer cannot keep is refused rather than silently ignored.
        if self.kind == "memory" and self.durability != "none":
            raise ValueError(
                f"buffer.durability={self.durability} needs buffer.kind=redis (the memory buffer dies with "
                "the driver); set buffer.kind: redis or buffer.durability: none"
            )
        return self
