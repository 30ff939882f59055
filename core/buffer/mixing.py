"""Staleness-aware mixing as pure functions: which fresh groups to take, which are too stale, how
many replayed groups to draw, and which of the replay and offline pools' groups. No I/O, so every
buffer shares them and they are tested on their own.

Rules (ARCHITECTURE.md, "Experience buffer"):
- A fresh group is on-policy enough while `learner_version - policy_version <= max_staleness`;
  older ones are set aside (the buffer moves them to replay or drops them, by config).
- `round(on_policy_fraction * batch_groups)` groups come from fresh data, the rest from replay/offline.
- At most `offline_cap` = floor(offline_fraction * batch_groups) of them come from the offline pool:
  without a cap, an offline file much larger than the replay pool takes almost the whole non-fresh
  share, since both pools are drawn from together.
- When one side is short, the other fills in (a batch is never smaller than necessary, but offline
  groups never pass their cap); with `on_policy_only` (RLOO without importance sampling) no replayed
  group is ever used.
"""

import math
import random
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


def offline_cap(batch_groups: int, offline_fraction: float) -> int:
    """The most offline groups one batch may hold: rounded down, since it is a cap (the epsilon keeps
    0.3 * 10 at 3 despite binary floating point)."""
    return math.floor(offline_fraction * batch_groups + 1e-9)


def pool_available(replay_size: int, offline_size: int, cap: int) -> int:
    """Groups the replay and offline pools can give one batch: all of replay, offline up to its cap."""
    return replay_size + min(offline_size, cap)


def draw_pools(
    rng: random.Random, count: int, replay_size: int, offline_size: int, cap: int
) -> tuple[list[int], list[int]]:
    """Indices into the replay pool and into the offline pool of up to `count` groups, drawn uniformly
    without replacement from both pools together, with at most `cap` from the offline pool: offline
    draws beyond the cap are given back and replaced by further replay draws. O(count) while the cap
    does not bind, so a large offline pool costs nothing per batch."""
    total = min(count, pool_available(replay_size, offline_size, cap))
    picks = rng.sample(range(replay_size + offline_size), min(count, replay_size + offline_size))
    replay = [index for index in picks if index < replay_size]
    offline = [index - replay_size for index in picks if index >= replay_size][:cap]
    short = total - len(replay) - len(offline)
    if short > 0:  # only when the cap gave offline draws back; replay has room for them (see total)
        taken = set(replay)
        replay += rng.sample([index for index in range(replay_size) if index not in taken], short)
    return replay, offline
