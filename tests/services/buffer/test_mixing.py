"""The pure mixing rule: fractions, the staleness bound, filling in, on-policy-only batches."""

import pytest

from services.buffer.mixing import FreshCandidate, plan_batch


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
