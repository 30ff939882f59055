"""One suite, run against every buffer (memory, Redis, memory behind its Ray actor): the shared semantics."""

from buffer_support import BufferFactory, make_group

from core.buffer.redis_buffer import RedisBuffer


def test_fresh_groups_are_delivered_exactly_once_in_order(new_buffer: BufferFactory) -> None:
    buffer = new_buffer(on_policy_fraction=1.0, max_staleness=5, replay_capacity=0)
    buffer.put([make_group(f"g{i}") for i in range(5)])
    first = buffer.sample(3, learner_version=0)
    second = buffer.sample(3, learner_version=0)
    assert [g.group_id for g in first.groups] == ["g0", "g1", "g2"] and first.num_fresh == 3
    assert [g.group_id for g in second.groups] == ["g3", "g4"]
    assert buffer.sample(3, learner_version=0).groups == []
    assert first.groups[0] == make_group("g0")  # bytes in, identical record out


def test_unacked_deliveries_come_back_after_recover_acked_ones_do_not(new_buffer: BufferFactory) -> None:
    buffer = new_buffer(on_policy_fraction=1.0)
    buffer.put([make_group("kept"), make_group("lost")])
    batch = buffer.sample(2, learner_version=0)
    assert buffer.ack(batch.delivery_ids[:1]) == 1  # the step that used "kept" finished; then it died
    assert buffer.ack(batch.delivery_ids[:1]) == 0  # a repeated ack settles nothing
    # Memory: the same object (it lives in a Ray actor that outlives the learner). Redis: a new client
    # with the same consumer name, as a restarted learner process would open.
    restarted = new_buffer(on_policy_fraction=1.0) if isinstance(buffer, RedisBuffer) else buffer
    assert restarted.recover() == 1
    again = restarted.sample(2, learner_version=0, on_policy_only=True)
    assert [g.group_id for g in again.groups] == ["lost"]
    restarted.ack(again.delivery_ids)
    assert restarted.recover() == 0
    stats = restarted.stats()
    assert (stats.depth, stats.replay_size) == (0, 2)
    assert (stats.counters["acked"], stats.counters["redelivered"]) == (2, 1)


def test_acked_groups_join_the_replay_pool_with_fifo_eviction(new_buffer: BufferFactory) -> None:
    buffer = new_buffer(on_policy_fraction=0.0, replay_capacity=3, max_staleness=100)
    for i in range(5):
        buffer.put([make_group(f"g{i}")])
        batch = buffer.sample(1, learner_version=0, on_policy_only=True)
        buffer.ack(batch.delivery_ids)
    stats = buffer.stats()
    assert stats.replay_size == 3 and stats.counters["evicted"] == 2
    replayed = {g.group_id for _ in range(30) for g in buffer.sample(3, learner_version=0).groups}
    assert replayed == {"g2", "g3", "g4"}  # the two oldest were evicted


def test_mixing_takes_the_configured_fraction(new_buffer: BufferFactory) -> None:
    buffer = new_buffer(on_policy_fraction=0.5, max_staleness=10)
    buffer.put_offline([make_group(f"old{i}") for i in range(10)])
    buffer.put([make_group(f"new{i}", version=3) for i in range(10)])
    batch = buffer.sample(8, learner_version=3)
    assert batch.num_fresh == 4 and batch.num_replayed == 4 and batch.on_policy_fraction == 0.5
    assert all(g.group_id.startswith("new") for g in batch.groups[:4])
    assert all(g.group_id.startswith("old") for g in batch.groups[4:])
    assert batch.staleness[:4] == [0, 0, 0, 0] and batch.staleness[4:] == [3, 3, 3, 3]
    assert len({g.group_id for g in batch.groups}) == 8  # replay draws without replacement


def test_when_one_side_is_short_the_other_fills_in(new_buffer: BufferFactory) -> None:
    buffer = new_buffer(on_policy_fraction=0.5, max_staleness=10)
    buffer.put([make_group(f"new{i}") for i in range(6)])
    only_fresh = buffer.sample(4, learner_version=0)  # nothing to replay yet: all fresh
    assert (only_fresh.num_fresh, only_fresh.num_replayed) == (4, 0)
    buffer.put_offline([make_group(f"old{i}") for i in range(10)])
    short_fresh = buffer.sample(6, learner_version=0)  # 2 fresh left of the 3 wanted: replay gives 4
    assert (short_fresh.num_fresh, short_fresh.num_replayed) == (2, 4)


def test_too_stale_groups_move_to_replay_or_are_dropped(new_buffer: BufferFactory) -> None:
    for policy, moved, dropped in (("replay", 2, 0), ("drop", 0, 2)):
        buffer = new_buffer(
            on_policy_fraction=1.0, max_staleness=1, stale_policy=policy, consumer=f"c-{policy}"
        )
        before = buffer.stats()  # redis: both rounds share one namespace and its counters
        buffer.put([make_group(f"{policy}-old{i}", version=0) for i in range(2)])
        buffer.put([make_group(f"{policy}-new", version=4)])
        batch = buffer.sample(3, learner_version=4, on_policy_only=True)
        assert [g.group_id for g in batch.groups] == [f"{policy}-new"]
        assert (batch.stale_moved, batch.stale_dropped) == (moved, dropped)
        after = buffer.stats()
        assert after.counters["stale_moved"] - before.counters["stale_moved"] == moved
        assert after.counters["stale_dropped"] - before.counters["stale_dropped"] == dropped
        assert after.replay_size - before.replay_size == moved


def test_on_policy_only_never_uses_replay(new_buffer: BufferFactory) -> None:
    buffer = new_buffer(on_policy_fraction=0.5)
    buffer.put_offline([make_group(f"off{i}") for i in range(5)])
    buffer.put([make_group("fresh")])
    batch = buffer.sample(4, learner_version=0, on_policy_only=True)
    assert [g.group_id for g in batch.groups] == ["fresh"] and batch.num_replayed == 0


def test_high_water_tells_actors_to_pause(new_buffer: BufferFactory) -> None:
    buffer = new_buffer(high_water=3, on_policy_fraction=1.0)
    assert buffer.put([make_group("a"), make_group("b")]).paused is False
    result = buffer.put([make_group("c")])
    assert result.paused is True and result.backlog == 3
    buffer.sample(2, learner_version=0)  # delivered: no longer backlog
    resumed = buffer.put([make_group("d")])
    assert resumed.paused is False and resumed.backlog == 2
    assert buffer.stats().counters["paused_signals"] == 1


def test_stats_and_learner_version(new_buffer: BufferFactory) -> None:
    buffer = new_buffer(on_policy_fraction=1.0, max_staleness=10)
    buffer.set_learner_version(7)
    assert buffer.learner_version() == 7
    buffer.put([make_group("v5", version=5), make_group("v7", version=7), make_group("v7b", version=7)])
    buffer.put_offline([make_group("off")])
    buffer.sample(1, learner_version=7)  # v5: pending, still held
    stats = buffer.stats()
    assert (stats.depth, stats.backlog, stats.pending, stats.offline_size) == (3, 2, 1, 1)
    assert stats.learner_version == 7
    assert stats.staleness_histogram == {2: 1, 0: 2}
    counts = stats.counters
    assert (counts["put"], counts["put_offline"], counts["delivered"], counts["sampled"]) == (3, 1, 1, 1)


def test_offline_fraction_caps_the_offline_share_of_a_batch(new_buffer: BufferFactory) -> None:
    """A large offline file next to a small replay pool: drawn from together, offline groups would take
    nearly the whole non-fresh share; `offline_fraction` caps them and replay fills the rest."""
    buffer = new_buffer(on_policy_fraction=0.5, offline_fraction=0.25, max_staleness=10)
    buffer.put([make_group(f"rep{i}") for i in range(2)])
    buffer.ack(buffer.sample(2, learner_version=0).delivery_ids)  # the replay pool: rep0, rep1
    buffer.put_offline([make_group(f"off{i}") for i in range(200)])
    for round_ in range(5):
        buffer.put([make_group(f"new{round_}-{i}") for i in range(4)])
        batch = buffer.sample(8, learner_version=0)
        names = [g.group_id[:3] for g in batch.groups]
        assert (names.count("new"), names.count("rep"), names.count("off")) == (4, 2, 2), names


def test_offline_groups_never_pass_their_cap_when_the_batch_runs_short(new_buffer: BufferFactory) -> None:
    buffer = new_buffer(on_policy_fraction=0.5, offline_fraction=0.25, max_staleness=10)
    buffer.put_offline([make_group(f"off{i}") for i in range(200)])
    buffer.put([make_group("new0"), make_group("new1")])
    names = [g.group_id[:3] for g in buffer.sample(8, learner_version=0).groups]
    assert (names.count("new"), names.count("off"), len(names)) == (2, 2, 4), names


def test_offline_fraction_zero_never_samples_offline_data(new_buffer: BufferFactory) -> None:
    buffer = new_buffer(on_policy_fraction=0.0, offline_fraction=0.0)
    buffer.put_offline([make_group(f"off{i}") for i in range(20)])
    buffer.put([make_group("new0")])
    assert [g.group_id for g in buffer.sample(4, learner_version=0).groups] == ["new0"]
