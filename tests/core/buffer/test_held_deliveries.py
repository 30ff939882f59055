"""Deliveries a learner holds unacked for several steps (it acks only once a checkpoint covers them):
they are not handed out again to the learner holding them, another learner recovering with
`claim_idle_s` does not take them over while the holder lives, and when they do come back after a
crash the staleness rules apply to them as to any fresh group."""

import redis
from buffer_support import BufferFactory, PrivateRedis, make_group

from core.buffer.redis_buffer import CONSUMER_GROUP, RedisBuffer
from core.config.buffer import BufferConfig

HOUR_MS = 3_600_000


def test_groups_held_over_several_samples_are_never_handed_out_twice(new_buffer: BufferFactory) -> None:
    buffer = new_buffer(on_policy_fraction=1.0, max_staleness=100, replay_capacity=0)
    buffer.put([make_group(f"g{i}") for i in range(6)])
    held = [buffer.sample(2, learner_version=0) for _ in range(3)]  # three steps, no ack yet
    assert [g.group_id for batch in held for g in batch.groups] == [f"g{i}" for i in range(6)]
    assert buffer.sample(2, learner_version=0).groups == []
    if isinstance(buffer, RedisBuffer):
        # A live learner asking its own client to recover must not get what it holds back either.
        assert buffer.recover() == 0
        assert buffer.sample(2, learner_version=0).groups == []
    stats = buffer.stats()
    assert (stats.pending, stats.backlog) == (6, 0)
    ids = [i for batch in held for i in batch.delivery_ids]
    assert buffer.ack(ids) == 6  # the checkpoint's ack settles all of them at once
    assert buffer.stats().pending == 0


def test_redelivered_groups_obey_the_staleness_bound(new_buffer: BufferFactory) -> None:
    for policy, moved, dropped in (("drop", 0, 2), ("replay", 2, 0)):
        settings = dict(on_policy_fraction=1.0, max_staleness=2, stale_policy=policy, consumer=f"c-{policy}")
        buffer = new_buffer(**settings)
        buffer.put([make_group(f"{policy}-{i}", version=0) for i in range(2)])
        assert len(buffer.sample(2, learner_version=0).groups) == 2  # held; then the learner dies
        restarted = new_buffer(**settings) if isinstance(buffer, RedisBuffer) else buffer
        assert restarted.recover() == 2
        # The resumed learner is 5 versions on (it republished): the groups are too stale to train.
        again = restarted.sample(2, learner_version=5, on_policy_only=True)
        assert again.groups == [] and (again.stale_moved, again.stale_dropped) == (moved, dropped)
        assert restarted.stats().pending == 0


def _fresh_key(buffer: RedisBuffer) -> str:
    return buffer.keys["fresh"]


def _age(client: redis.Redis, buffer: RedisBuffer, consumer: str, delivery_id: str) -> None:
    """Make a pending entry look idle for an hour (what a learner holding it for an hour would show)."""
    client.xclaim(_fresh_key(buffer), CONSUMER_GROUP, consumer, 0, [delivery_id], idle=HOUR_MS, justid=True)


def test_another_learner_does_not_claim_what_a_live_learner_holds(private_redis: PrivateRedis) -> None:
    def config(claim_idle_s: float) -> BufferConfig:
        return BufferConfig(
            kind="redis", redis_url=private_redis.url, namespace="held", on_policy_fraction=1.0,
            claim_idle_s=claim_idle_s,
        )  # fmt: skip

    # The live learner refreshes its holds whenever it samples or polls stats (every claim_idle_s / 4:
    # here every call). A dead one holds its deliveries too, but refreshes nothing.
    live = RedisBuffer(config(claim_idle_s=0.001), consumer="learner-live")
    live.put([make_group("held-by-live"), make_group("held-by-dead")])
    assert live.recover() == 0  # started first (its recover would claim anything idle for 1 ms)
    held = live.sample(1, learner_version=0)
    dead = RedisBuffer(config(claim_idle_s=0.0), consumer="learner-dead")
    orphan = dead.sample(1, learner_version=0)
    dead.close()
    assert [g.group_id for g in held.groups + orphan.groups] == ["held-by-live", "held-by-dead"]

    client = redis.Redis.from_url(private_redis.url)
    _age(client, live, "learner-live", held.delivery_ids[0])  # an hour between its checkpoints
    _age(client, dead, "learner-dead", orphan.delivery_ids[0])
    live.stats()  # the live learner polls while it waits for fresh groups: its holds look busy again

    newcomer = RedisBuffer(config(claim_idle_s=60.0), consumer="learner-new")
    assert newcomer.recover() == 1  # the dead learner's group only
    assert [g.group_id for g in newcomer.sample(2, learner_version=0).groups] == ["held-by-dead"]
    assert live.ack(held.delivery_ids) == 1  # still the live learner's to settle at its checkpoint
