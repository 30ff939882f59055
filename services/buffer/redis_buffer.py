"""The durable, shared experience buffer on Redis (the only module that imports redis).

Layout under the key prefix `<namespace>`:
  :fresh    stream of fresh groups (fields `pv` = policy version, `data` = msgpack payload), read through
            the consumer group `learners`; an entry stays pending until acked, so a learner killed
            between sample and ack gets it again on restart (its pending entries are re-read first)
  :replay   list, newest first, trimmed to `replay_capacity` (FIFO eviction of the oldest)
  :offline  list of ingested off-policy groups (not evicted)
  :version  the learner's policy version;  :counters  hash of event counts
Acks are one MULTI/EXEC transaction (XACK + XDEL + LPUSH + LTRIM), so a group is never both pending
and in replay, nor lost between the two. Payloads are msgpack (services.schemas), never pickle.
Connection errors are retried with exponential backoff; each retry is logged and counted.
"""

import logging
import random
from collections import Counter
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from services.buffer.mixing import FreshCandidate, plan_batch
from services.buffer.protocol import COUNTERS, BufferStats, PutResult, SampledBatch
from services.config.buffer import BufferConfig
from services.schemas import ScoredGroup

log = logging.getLogger(__name__)
CONSUMER_GROUP = "learners"


class FailureCount:
    """A counter shared by every copy of the retry policy (redis-py deep-copies it per connection)."""

    def __init__(self) -> None:
        self.value = 0

    def __deepcopy__(self, memo: dict) -> "FailureCount":
        return self


class ReportingRetry(Retry):
    """redis-py's retry with backoff, plus a log line and a counter for every failed attempt."""

    def __init__(self, retries: int, failures: FailureCount | None = None):
        super().__init__(ExponentialBackoff(cap=2.0, base=0.05), retries)
        self.failures = failures or FailureCount()

    def call_with_retry(self, do: Any, fail: Any, *args: Any, **kwargs: Any) -> Any:
        def report(error: Exception) -> None:
            self.failures.value += 1
            log.warning("redis connection problem (retry %d, with backoff): %s", self.failures.value, error)
            fail(error)

        return super().call_with_retry(do, report, *args, **kwargs)


class RedisBuffer:
    def __init__(self, config: BufferConfig, consumer: str = "learner-0", seed: int = 0, retries: int = 8):
        self.config = config
        self.consumer = consumer
        self.retry = ReportingRetry(retries)
        self.client = redis.Redis.from_url(
            config.redis_url,
            retry=self.retry,
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            socket_timeout=30,
            health_check_interval=10,
        )
        prefix = config.namespace
        self.keys = {
            name: f"{prefix}:{name}" for name in ("fresh", "replay", "offline", "version", "counters")
        }
        self._rng = random.Random(seed)
        self._delivered: dict[str, bytes] = {}  # this session's pending deliveries: id -> payload
        self._redelivery: list[tuple[str, int, bytes]] = []
        self._recovered = False
        # Counter increments ride along with the next write pipeline instead of costing a round trip.
        self._unflushed: Counter[str] = Counter()
        self._ensure_group()

    def _ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.keys["fresh"], CONSUMER_GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def put(self, groups: list[ScoredGroup]) -> PutResult:
        pipe = self.client.pipeline(transaction=True)
        for group in groups:
            pipe.xadd(self.keys["fresh"], {"pv": group.policy_version, "data": group.to_bytes()})
        self._unflushed["put"] += len(groups)
        self._flush_counts(pipe)
        pipe.xlen(self.keys["fresh"])
        pipe.xpending(self.keys["fresh"], CONSUMER_GROUP)
        *_, length, pending = pipe.execute()
        backlog = int(length) - int(pending["pending"])
        paused = backlog >= self.config.high_water
        self._unflushed["paused_signals"] += int(paused)
        return PutResult(accepted=len(groups), backlog=backlog, paused=paused)

    def _flush_counts(self, pipe: Any) -> None:
        for name, value in self._unflushed.items():
            if value:
                pipe.hincrby(self.keys["counters"], name, value)
        self._unflushed.clear()

    def put_offline(self, groups: list[ScoredGroup]) -> int:
        if not groups:
            return 0
        pipe = self.client.pipeline(transaction=True)
        pipe.rpush(self.keys["offline"], *[group.to_bytes() for group in groups])
        self._unflushed["put_offline"] += len(groups)
        self._flush_counts(pipe)
        pipe.execute()
        return len(groups)

    def recover(self) -> int:
        """Queue this consumer's pending entries (delivered before a crash, never acked) for redelivery."""
        self._recovered = True
        entries = self.client.xreadgroup(
            CONSUMER_GROUP, self.consumer, {self.keys["fresh"]: "0"}, count=100_000
        )
        pending = [
            (entry_id.decode(), int(fields[b"pv"]), fields[b"data"]) for entry_id, fields in _entries(entries)
        ]
        known = {delivery_id for delivery_id, _, _ in self._redelivery}
        self._redelivery.extend(
            item for item in pending if item[0] not in self._delivered and item[0] not in known
        )
        self._unflushed["redelivered"] += len(pending)
        return len(pending)

    def sample(self, batch_groups: int, learner_version: int, on_policy_only: bool = False) -> SampledBatch:
        if not self._recovered:
            self.recover()
        replay_available = 0 if on_policy_only else self._replay_size()
        want = batch_groups if on_policy_only else round(self.config.on_policy_fraction * batch_groups)
        want = max(want, batch_groups - replay_available)  # fresh fills in when replay is short
        candidates, stale_moved, stale_dropped = self._read_fresh(want, learner_version)
        plan = plan_batch(
            [FreshCandidate(delivery_id, version) for delivery_id, version, _ in candidates],
            replay_available,
            batch_groups,
            learner_version,
            self.config.on_policy_fraction,
            self.config.max_staleness,
            on_policy_only,
        )
        payloads = {delivery_id: payload for delivery_id, _, payload in candidates}
        # Read but not used (only possible when replay covered more than planned): give back for later.
        unused = [c for c in candidates if c[0] not in set(plan.take)]
        self._redelivery = unused + self._redelivery
        fresh_groups = [ScoredGroup.from_bytes(payloads[delivery_id]) for delivery_id in plan.take]
        self._delivered.update((delivery_id, payloads[delivery_id]) for delivery_id in plan.take)
        replayed = self._sample_replay(plan.num_replay)
        self._unflushed.update(delivered=len(fresh_groups), replayed=len(replayed))
        groups = fresh_groups + replayed
        return SampledBatch(
            groups=groups,
            delivery_ids=list(plan.take),
            num_fresh=len(fresh_groups),
            num_replayed=len(replayed),
            stale_moved=stale_moved,
            stale_dropped=stale_dropped,
            staleness=[learner_version - group.policy_version for group in groups],
        )

    def _read_fresh(self, want: int, learner_version: int) -> tuple[list[tuple[str, int, bytes]], int, int]:
        """Usable fresh entries (redeliveries first), up to `want`; settles too-stale ones on the way."""
        usable: list[tuple[str, int, bytes]] = []
        stale: list[tuple[str, int, bytes]] = []
        while len(usable) < want:
            if self._redelivery:
                batch = self._redelivery[: want - len(usable)]
                self._redelivery = self._redelivery[len(batch) :]
            else:
                entries = self.client.xreadgroup(
                    CONSUMER_GROUP, self.consumer, {self.keys["fresh"]: ">"}, count=want - len(usable)
                )
                batch = [(i.decode(), int(f[b"pv"]), f[b"data"]) for i, f in _entries(entries)]
                if not batch:
                    break
            for item in batch:
                too_old = learner_version - item[1] > self.config.max_staleness
                (stale if too_old else usable).append(item)
        moved, dropped = self._settle_stale(stale)
        return usable, moved, dropped

    def _settle_stale(self, stale: list[tuple[str, int, bytes]]) -> tuple[int, int]:
        if not stale:
            return 0, 0
        to_replay = self.config.stale_policy == "replay"
        pipe = self.client.pipeline(transaction=True)
        ids = [delivery_id for delivery_id, _, _ in stale]
        pipe.xack(self.keys["fresh"], CONSUMER_GROUP, *ids)
        pipe.xdel(self.keys["fresh"], *ids)
        self._unflushed["stale_moved" if to_replay else "stale_dropped"] += len(stale)
        self._flush_counts(pipe)
        if to_replay:
            self._push_replay(pipe, [payload for _, _, payload in stale])
        self._count_evictions(pipe.execute(), to_replay)
        return (len(stale), 0) if to_replay else (0, len(stale))

    def ack(self, delivery_ids: list[str]) -> int:
        """Settle deliveries after the step that used them; acked groups join the replay pool."""
        known = [delivery_id for delivery_id in delivery_ids if delivery_id in self._delivered]
        if not known:
            return 0
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(self.keys["fresh"], CONSUMER_GROUP, *known)
        pipe.xdel(self.keys["fresh"], *known)
        self._unflushed["acked"] += len(known)
        self._flush_counts(pipe)
        self._push_replay(pipe, [self._delivered[delivery_id] for delivery_id in known])
        replies = pipe.execute()
        self._count_evictions(replies, pushed=True)
        for delivery_id in known:
            del self._delivered[delivery_id]
        return int(replies[0])

    def _push_replay(self, pipe: Any, payloads: list[bytes]) -> None:
        """LPUSH then LTRIM as the last two commands of `pipe` (see `_count_evictions`)."""
        if self.config.replay_capacity == 0:
            self._unflushed["evicted"] += len(payloads)
            return
        pipe.lpush(self.keys["replay"], *payloads)
        pipe.ltrim(self.keys["replay"], 0, self.config.replay_capacity - 1)

    def _count_evictions(self, replies: list[Any], pushed: bool) -> None:
        """LPUSH (second to last) replies with the length before the trim; the excess was evicted."""
        if pushed and self.config.replay_capacity > 0:
            self._unflushed["evicted"] += max(0, int(replies[-2]) - self.config.replay_capacity)

    def _replay_size(self) -> int:
        pipe = self.client.pipeline(transaction=False)
        pipe.llen(self.keys["replay"])
        pipe.llen(self.keys["offline"])
        replay, offline = pipe.execute()
        return int(replay) + int(offline)

    def _sample_replay(self, count: int) -> list[ScoredGroup]:
        if count == 0:
            return []
        pipe = self.client.pipeline(transaction=False)
        pipe.llen(self.keys["replay"])
        pipe.llen(self.keys["offline"])
        replay_size, offline_size = (int(n) for n in pipe.execute())
        picks = self._rng.sample(range(replay_size + offline_size), min(count, replay_size + offline_size))
        for index in picks:
            if index < replay_size:
                pipe.lindex(self.keys["replay"], index)
            else:
                pipe.lindex(self.keys["offline"], index - replay_size)
        # An index evicted between LLEN and LINDEX reads None; that group is simply not replayed.
        return [ScoredGroup.from_bytes(payload) for payload in pipe.execute() if payload is not None]

    def set_learner_version(self, version: int) -> None:
        self.client.set(self.keys["version"], version)

    def learner_version(self) -> int:
        value = self.client.get(self.keys["version"])
        return int(value) if value is not None else 0

    def stats(self) -> BufferStats:
        pipe = self.client.pipeline(transaction=False)
        self._flush_counts(pipe)
        pipe.xlen(self.keys["fresh"])
        pipe.xpending(self.keys["fresh"], CONSUMER_GROUP)
        pipe.llen(self.keys["replay"])
        pipe.llen(self.keys["offline"])
        pipe.hgetall(self.keys["counters"])
        pipe.xrange(self.keys["fresh"], count=10_000)
        *_, length, pending, replay, offline, counters, entries = pipe.execute()
        version = self.learner_version()
        histogram = Counter(version - int(fields[b"pv"]) for _, fields in entries)
        merged = {name: 0 for name in COUNTERS} | {k.decode(): int(v) for k, v in counters.items()}
        merged["connection_retries"] = self.retry.failures.value
        return BufferStats(
            backlog=int(length) - int(pending["pending"]),
            pending=int(pending["pending"]),
            replay_size=int(replay),
            offline_size=int(offline),
            learner_version=version,
            staleness_histogram=dict(histogram),
            counters=merged,
        )

    def delete_all(self) -> None:
        """Remove every key of this namespace (tests, and `tandem buffer reset`)."""
        self.client.delete(*self.keys.values())

    def close(self) -> None:
        if any(self._unflushed.values()):
            pipe = self.client.pipeline(transaction=False)
            self._flush_counts(pipe)
            pipe.execute()
        self.client.close()


def _entries(reply: Any) -> list[tuple[bytes, dict[bytes, Any]]]:
    """XREADGROUP's reply [[stream, [(id, fields), ...]]] flattened; deleted entries have fields None."""
    if not reply:
        return []
    return [(entry_id, fields) for _, entries in reply for entry_id, fields in entries if fields is not None]


__all__ = ["RedisBuffer"]
