"""The pure mixing rule: fractions, the staleness bound, filling in, on-policy-only batches."""

import random

import pytest

from core.buffer.mixing import FreshCandidate, draw_pools, offline_cap, plan_batch, pool_available


def fresh(*versions: int) -> list[FreshCandidate]:
    return [FreshCandidate(f"f{i}", version) for i, version in enumerate(versions)]


def test_fraction_of_fresh_and_replay() -> None:
    plan = plan_batch(
        fresh(5, 5, 5, 5, 5, 5),
        replay_available=10,
        batch_groups=8,
        learner_version=5,
        on_policy_fraction=0.75,
        max_staleness=1,
    )
    assert plan.take == ["f0", "f1", "f2", "f3", "f4", "f5"] and plan.num_replay == 2


def test_staleness_bound_is_inclusive_and_stale_groups_are_named() -> None:
    # learner at 10, bound 2: versions 8, 9, 10 are usable, 7 and 3 are too stale.
    plan = plan_batch(
        fresh(3, 8, 7, 10, 9),
        replay_available=0,
        batch_groups=4,
        learner_version=10,
        on_policy_fraction=1.0,
        max_staleness=2,
    )
    assert plan.too_stale == ["f0", "f2"]
    assert plan.take == ["f1", "f3", "f4"] and plan.num_replay == 0


def test_replay_fills_in_when_fresh_is_short_and_fresh_when_replay_is_short() -> None:
    short_fresh = plan_batch(
        fresh(1),
        replay_available=10,
        batch_groups=4,
        learner_version=1,
        on_policy_fraction=0.75,
        max_staleness=0,
    )
    assert short_fresh.take == ["f0"] and short_fresh.num_replay == 3
    short_replay = plan_batch(
        fresh(1, 1, 1, 1, 1),
        replay_available=1,
        batch_groups=4,
        learner_version=1,
        on_policy_fraction=0.25,
        max_staleness=0,
    )
    assert len(short_replay.take) == 3 and short_replay.num_replay == 1


def test_on_policy_only_never_replays() -> None:
    plan = plan_batch(
        fresh(2, 2),
        replay_available=100,
        batch_groups=4,
        learner_version=2,
        on_policy_fraction=0.5,
        max_staleness=0,
        on_policy_only=True,
    )
    assert plan.take == ["f0", "f1"] and plan.num_replay == 0


def test_offline_only_training() -> None:
    plan = plan_batch(
        [], replay_available=3, batch_groups=4, learner_version=0, on_policy_fraction=0.0, max_staleness=0
    )
    assert plan.take == [] and plan.num_replay == 3


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="batch_groups"):
        plan_batch([], 0, 0, 0, 0.5, 1)
    with pytest.raises(ValueError, match="on_policy_fraction"):
        plan_batch([], 0, 1, 0, 1.5, 1)


def test_fraction_rounds_to_the_nearest_group() -> None:
    # 0.75 * 5 = 3.75 -> 4 fresh, 1 replayed; 0.3 * 5 = 1.5 -> 2 (round half to even), 3 replayed.
    three_quarters = plan_batch(fresh(*[0] * 9), 9, 5, 0, 0.75, 0)
    assert (len(three_quarters.take), three_quarters.num_replay) == (4, 1)
    three_tenths = plan_batch(fresh(*[0] * 9), 9, 5, 0, 0.3, 0)
    assert (len(three_tenths.take), three_tenths.num_replay) == (2, 3)


def reference_plan(
    versions: list[int], replay: int, batch: int, learner: int, fraction: float, bound: int
) -> tuple[list[int], list[int], int]:
    """The rule written as plain loops: indices taken, indices too stale, replay count."""
    usable, stale = [], []
    for index, version in enumerate(versions):
        if learner - version <= bound:
            usable.append(index)
        else:
            stale.append(index)
    fresh_count = min(round(fraction * batch), len(usable))
    replay_count = min(batch - fresh_count, replay)
    while fresh_count + replay_count < batch and fresh_count < len(usable):
        fresh_count += 1  # replay was short: fresh fills in
    return usable[:fresh_count], stale, replay_count


def test_matches_a_plain_loop_reference_on_random_cases() -> None:
    rng = random.Random(0)
    for _ in range(2000):
        versions = [rng.randint(0, 6) for _ in range(rng.randint(0, 10))]
        args = (
            rng.randint(0, 8),
            rng.randint(1, 8),
            6,
            rng.choice([0.0, 0.25, 0.5, 0.75, 1.0]),
            rng.randint(0, 3),
        )
        plan = plan_batch(fresh(*versions), *args)
        taken, stale, replay = reference_plan(versions, *args)
        assert plan.take == [f"f{i}" for i in taken] and plan.too_stale == [f"f{i}" for i in stale]
        assert plan.num_replay == replay
        # Never more than asked, and never short while either side still has groups.
        usable = len(versions) - len(stale)
        assert len(plan.take) + plan.num_replay == min(args[1], usable + args[0])


def test_offline_cap_rounds_down_and_pool_draws_respect_it() -> None:
    assert offline_cap(10, 0.3) == 3 and offline_cap(8, 0.2) == 1 and offline_cap(8, 1.0) == 8
    assert pool_available(replay_size=2, offline_size=100, cap=3) == 5
    rng = random.Random(0)
    for _ in range(200):
        replay, offline = draw_pools(rng, count=6, replay_size=4, offline_size=1000, cap=3)
        assert len(offline) == 3 and len(replay) == 3  # the cap binds; replay makes up the rest
        assert len(set(replay)) == 3 and all(0 <= i < 4 for i in replay)
        assert len(set(offline)) == 3 and all(0 <= i < 1000 for i in offline)
    # Without a binding cap the draw is uniform over both pools together, as before the cap existed.
    offline_share = sum(
        len(draw_pools(rng, count=4, replay_size=30, offline_size=10, cap=4)[1]) for _ in range(2000)
    ) / (4 * 2000)
    assert offline_share == pytest.approx(10 / 40, abs=0.02)
    # Both pools short: everything they have, offline only up to the cap.
    assert [len(part) for part in draw_pools(rng, count=9, replay_size=2, offline_size=5, cap=1)] == [2, 1]
