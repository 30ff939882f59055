"""Crashes against a real redis-server: a consumer killed between sample and ack, Redis killed and
restarted with AOF, and a short outage ridden out by retries."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from buffer_support import PrivateRedis, make_group

from services.buffer.redis_buffer import RedisBuffer
from services.config.buffer import BufferConfig

ROOT = Path(__file__).resolve().parents[3]

CONSUMER = """
import sys, time
from services.buffer.redis_buffer import RedisBuffer
from services.config.buffer import BufferConfig
config = BufferConfig(kind="redis", redis_url=sys.argv[1], namespace="crash", on_policy_fraction=1.0)
buffer = RedisBuffer(config)
batch = buffer.sample(1, learner_version=0, on_policy_only=True)
print(batch.groups[0].group_id, flush=True)
time.sleep(600)  # the 'training step' during which the learner is killed
"""


def config(url: str, **fields: object) -> BufferConfig:
    return BufferConfig(kind="redis", redis_url=url, namespace="crash", on_policy_fraction=1.0, **fields)


def test_consumer_killed_between_sample_and_ack_gets_the_group_again(private_redis: PrivateRedis) -> None:
    producer = RedisBuffer(config(private_redis.url), consumer="actor")
    producer.put([make_group("g-first"), make_group("g-second")])
    process = subprocess.Popen(
        [sys.executable, "-c", CONSUMER, private_redis.url], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert process.stdout is not None
    delivered = process.stdout.readline().strip()
    assert delivered == "g-first"
    os.kill(process.pid, signal.SIGKILL)  # no ack, no clean-up
    process.wait()

    restarted = RedisBuffer(config(private_redis.url))  # same consumer name as the dead learner
    again = restarted.sample(2, learner_version=0, on_policy_only=True)
    assert [g.group_id for g in again.groups] == ["g-first", "g-second"]  # redelivered first, nothing lost
    assert restarted.stats().counters["redelivered"] == 1
    restarted.ack(again.delivery_ids)

    third = RedisBuffer(config(private_redis.url))
    assert third.sample(2, learner_version=0, on_policy_only=True).groups == []  # not trained twice


def test_acknowledged_puts_survive_a_redis_kill_and_restart(private_redis: PrivateRedis) -> None:
    buffer = RedisBuffer(config(private_redis.url), consumer="learner-0")
    buffer.put([make_group(f"g{i}", version=4) for i in range(3)])
    buffer.put_offline([make_group("offline")])
    buffer.set_learner_version(4)
    batch = buffer.sample(1, learner_version=4, on_policy_only=True)
    buffer.ack(batch.delivery_ids)
    buffer.close()

    private_redis.kill()  # SIGKILL: only what the AOF (fsync always) holds survives
    private_redis.start()

    reopened = RedisBuffer(config(private_redis.url), consumer="learner-0")
    stats = reopened.stats()
    assert (stats.backlog, stats.replay_size, stats.offline_size, stats.learner_version) == (2, 1, 1, 4)
    rest = reopened.sample(5, learner_version=4, on_policy_only=True)
    assert [g.group_id for g in rest.groups] == ["g1", "g2"]


def test_a_short_outage_is_retried_and_counted(private_redis: PrivateRedis) -> None:
    buffer = RedisBuffer(config(private_redis.url), consumer="learner-0", retries=12)
    buffer.put([make_group("before")])
    private_redis.kill()
    restarter = threading.Timer(0.6, private_redis.start)
    restarter.start()
    started = time.monotonic()
    result = buffer.put([make_group("during")])  # blocks through the outage, then succeeds
    restarter.join()
    assert result.accepted == 1 and time.monotonic() - started >= 0.5
    stats = buffer.stats()
    assert stats.counters["connection_retries"] >= 1
    assert stats.backlog == 2
