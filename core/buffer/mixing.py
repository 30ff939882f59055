"""Staleness-aware mixing as a pure function: which fresh groups to take, which are too stale, how
many replayed groups to draw. No I/O, so every buffer shares it and it is tested on its own.

Rules (ARCHITECTURE.md, "Experience buffer"):
- A fresh group is on-policy enough while `learner_version - policy_version <= max_staleness`;
  older ones are set aside (the buffer moves them to replay or drops them, by config).
- `round(on_policy_fraction * batch_groups)` groups come from fresh data, the rest from replay/offline.
- When one side is short, the other fills in (a batch is never smaller than necessary); with
  `on_policy_only` (RLOO without importance sampling) no replayed group is ever used.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class FreshCandidate:
    """A fresh group the buffer could deliver: its delivery id and (oldest) policy version."""

    delivery_id: str
    policy_version: int


@dataclass(frozen=True)
class MixPlan:
    """`take`: fresh delivery ids for the batch, oldest first. `too_stale`: fresh ids beyond the bound,
    for the buffer to move to replay or drop. `num_replay`: groups to draw from replay/offline."""

    take: list[str]
    too_stale: list[str]
    num_replay: int


def plan_batch(
    fresh: list[FreshCandidate],
    replay_available: int,
    batch_groups: int,
    learner_version: int,
    on_policy_fraction: float,
    max_staleness: int,
    on_policy_only: bool = False,
) -> MixPlan:
    """Choose a batch from fresh candidates (oldest first) and the replay pool's size."""
    if batch_groups < 1:
        raise ValueError(f"batch_groups must be >= 1, got {batch_groups}")
    if not 0.0 <= on_policy_fraction <= 1.0:
        raise ValueError(f"on_policy_fraction must be in [0, 1], got {on_policy_fraction}")
    usable = [c for c in fresh if learner_version - c.policy_version <= max_staleness]
    too_stale = [c.delivery_id for c in fresh if learner_version - c.policy_version > max_staleness]
    if on_policy_only:
        return MixPlan([c.delivery_id for c in usable[:batch_groups]], too_stale, 0)
    fresh_target = round(on_policy_fraction * batch_groups)
    num_fresh = min(fresh_target, len(usable))
    num_replay = min(batch_groups - num_fresh, replay_available)
    num_fresh = min(len(usable), batch_groups - num_replay)  # fresh fills in when replay is short
    return MixPlan([c.delivery_id for c in usable[:num_fresh]], too_stale, num_replay)
