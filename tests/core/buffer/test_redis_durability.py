"""Crashes against a real redis-server: a consumer killed between sample and ack (back under the same
name, or claimed by another once idle), Redis killed and restarted with AOF, and a short outage ridden
out by retries."""

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from buffer_support import PrivateRedis, make_group

from core.buffer.redis_buffer import RedisBuffer
from core.config.buffer import BufferConfig

ROOT = Path(__file__).resolve().parents[3]

CONSUMER = """
import sys, time
from core.buffer.redis_buffer import RedisBuffer
from core.config.buffer import BufferConfig
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
    assert restarted.ack(again.delivery_ids) == 2

    third = RedisBuffer(config(private_redis.url))
    assert third.sample(2, learner_version=0, on_policy_only=True).groups == []  # not trained twice
    stats = third.stats()
    assert (stats.depth, stats.pending, stats.replay_size, stats.counters["acked"]) == (0, 0, 2, 2)


def test_another_consumer_claims_a_dead_ones_deliveries_once_they_are_idle(
    private_redis: PrivateRedis,
) -> None:
    dead = RedisBuffer(config(private_redis.url), consumer="learner-host-a")
    dead.put([make_group("orphan")])
    assert [g.group_id for g in dead.sample(1, learner_version=0).groups] == ["orphan"]
    dead.client.close()  # died without ack; it comes back as "learner-host-b"

    patient = RedisBuffer(config(private_redis.url, claim_idle_s=60.0), consumer="learner-host-b")
    assert patient.recover() == 0  # idle for less than 60 s: it may still be training on it
    time.sleep(0.3)
    claiming = RedisBuffer(config(private_redis.url, claim_idle_s=0.2), consumer="learner-host-b")
    assert claiming.recover() == 1
    batch = claiming.sample(1, learner_version=0)
    assert [g.group_id for g in batch.groups] == ["orphan"]
    assert claiming.ack(batch.delivery_ids) == 1
    assert claiming.stats().pending == 0


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


def test_a_short_outage_is_retried_logged_and_counted(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    buffer = RedisBuffer(config(private_redis.url), consumer="learner-0", retries=12)
    buffer.put([make_group("before")])
    private_redis.kill()
    restarter = threading.Timer(0.6, private_redis.start)
    restarter.start()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="core.buffer.redis_buffer"):
        result = buffer.put([make_group("during")])  # blocks through the outage, then succeeds
    restarter.join()
    assert result.accepted == 1 and time.monotonic() - started >= 0.5
    assert "redis connection problem (retry 1, with backoff)" in caplog.text
    stats = buffer.stats()
    assert stats.counters["connection_retries"] >= 1
    assert stats.backlog == 2  # "before" survived the kill (AOF) and "during" was stored once


def test_a_put_whose_reply_was_lost_is_not_stored_twice(
    private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer = RedisBuffer(config(private_redis.url), consumer="learner-0")
    applied = buffer._transaction
    calls = []

    def applied_then_disconnected(records: list, receipt: str) -> tuple[int, int, int]:
        calls.append(len(records))
        result = applied(records, receipt)
        if len(calls) == 1:
            raise redis.ConnectionError("connection reset after EXEC")  # Redis stored it; we never heard
        return result

    monkeypatch.setattr(buffer, "_transaction", applied_then_disconnected)
    result = buffer.put([make_group("once"), make_group("twice?")])
    assert calls == [2] and (result.accepted, result.backlog) == (2, 2)  # checked the receipt, no resend
    assert [g.group_id for g in buffer.sample(5, learner_version=0).groups] == ["once", "twice?"]
    assert buffer.stats().counters["connection_retries"] == 1


def test_a_put_that_never_reached_redis_is_sent_again(
    private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer = RedisBuffer(config(private_redis.url), consumer="learner-0")
    applied = buffer._transaction
    calls = []

    def lost_then_applied(records: list, receipt: str) -> tuple[int, int, int]:
        calls.append(len(records))
        if len(calls) == 1:
            raise redis.ConnectionError("connection refused")
        return applied(records, receipt)

    monkeypatch.setattr(buffer, "_transaction", lost_then_applied)
    assert buffer.put([make_group("late")]).backlog == 1 and calls == [1, 1]
    assert [g.group_id for g in buffer.sample(5, learner_version=0).groups] == ["late"]
