"""The durable, shared experience buffer on Redis (the only module that imports redis).

Layout under the key prefix `<namespace>`:
  :fresh     stream of groups (fields `pv` = policy version, `data` = msgpack payload), read through
             the consumer group `learners`; an entry stays pending until acked, so a learner killed
             between sample and ack gets it again when it recovers (its own pending entries, plus,
             with `claim_idle_s`, other consumers' idle ones via XAUTOCLAIM). Acked entries stay
             here while the replay pool refers to them.
  :versions  hash policy version -> fresh (unacked) groups of that version (the staleness histogram)
  :replay    list of :fresh entry ids, newest first, at most `replay_capacity` (FIFO eviction of the
             oldest, which deletes its entry)
  :offline   list of ingested off-policy groups (not evicted)
  :version   the learner's policy version;  :counters  hash of event counts
  :put:<id>  receipt of one put (kept an hour), read only to retry a put whose reply was lost
Every write is atomic and safe to retry after a lost reply (a retry must not store or replay a group
twice): acks and stale settlements are Lua scripts (redis_scripts.py) that act only on entries still
pending; a put is one MULTI/EXEC that also sets a receipt `:put:<uuid>`, sent on a connection without
automatic retry, and retried by `_write_new` only after that receipt says it was not applied.
(Payloads stay out of Lua, where each 30 KB argument or reply costs a conversion.)
`put` returns after Redis replied, i.e. after the AOF fsync when the server runs `appendfsync
always`. Payloads are msgpack, never pickle. Connection errors are retried with exponential
backoff; each failed attempt is logged and counted.
"""

import logging
import random
import time
import uuid
from collections import Counter
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from core.buffer.mixing import FreshCandidate, plan_batch
from core.buffer.protocol import COUNTERS, BufferStats, PutResult, SampledBatch
from core.buffer.redis_scripts import SETTLE
from core.config.buffer import BufferConfig
from core.schemas import ScoredGroup

log = logging.getLogger(__name__)
CONSUMER_GROUP = "learners"
RECEIPT_TTL_S = 3600  # a put's receipt outlives any retry of it (8 retries back off for ~10 s in all)
Entry = tuple[str, int, bytes]  # delivery id, policy version, payload
Sizes = tuple[int, int, int, int]  # stream length, pending, replay size, learner version


class FailureCount:
    """A counter shared by every copy of the retry policy (redis-py deep-copies it per connection)."""

    def __init__(self) -> None:
        self.value = 0

    def __deepcopy__(self, memo: dict) -> "FailureCount":
        return self


class ReportingRetry(Retry):
    """redis-py's retry with backoff, plus a log line and a counter for every failed attempt."""

    def __init__(self, retries: int, failures: FailureCount | None = None):
        self.backoff = ExponentialBackoff(cap=2.0, base=0.05)
        super().__init__(self.backoff, retries)
        self.failures = failures or FailureCount()

    def report(self, error: Exception) -> None:
        self.failures.value += 1
        log.warning("redis connection problem (retry %d, with backoff): %s", self.failures.value, error)

    def call_with_retry(self, do: Any, fail: Any, *args: Any, **kwargs: Any) -> Any:
        def report_and_fail(error: Exception) -> None:
            self.report(error)
            fail(error)

        return super().call_with_retry(do, report_and_fail, *args, **kwargs)


class RedisBuffer:
    """`consumer` names this learner in the consumer group: a restart under the same name gets its
    unacked deliveries back. Actors that only `put` may use any name."""

    def __init__(self, config: BufferConfig, consumer: str = "learner-0", seed: int = 0, retries: int = 8):
        self.config = config
        self.consumer = consumer
        self.retries = retries
        self.retry = ReportingRetry(retries)
        self.client = redis.Redis.from_url(
            config.redis_url,
            retry=self.retry,
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            socket_timeout=30,
            health_check_interval=10,
        )
        # Puts go through a connection that never retries by itself: see `_write_new`.
        self.writer = redis.Redis.from_url(
            config.redis_url, retry=Retry(ExponentialBackoff(), 0), socket_timeout=30
        )
        prefix = config.namespace
        self.keys = {
            name: f"{prefix}:{name}"
            for name in ("fresh", "versions", "replay", "offline", "version", "counters")
        }
        self._settle_script = self.client.register_script(SETTLE)
        self._rng = random.Random(seed)
        self._queued: list[Entry] = []  # read from Redis (pending for us) but not yet handed out
        self._delivered: dict[str, int] = {}  # handed out, not yet acked: id -> policy version
        self._recovered = False
        # Sample-side counts ride along with the next pipeline instead of costing a round trip.
        self._unflushed: Counter[str] = Counter()
        self._ensure_group()

    def _ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.keys["fresh"], CONSUMER_GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def put(self, groups: list[ScoredGroup]) -> PutResult:
        stream_length, pending, replay, version = self._write_new(groups)
        backlog = stream_length - pending - replay  # the stream also holds the replay pool's entries
        paused = backlog >= self.config.high_water
        self._unflushed["paused_signals"] += int(paused)
        return PutResult(len(groups), backlog, paused, learner_version=version)

    def _write_new(self, groups: list[ScoredGroup]) -> Sizes:
        """One MULTI/EXEC: the groups, a receipt key for this put, and the counts. Returns the stream
        length, pending entries, replay size and learner version after it. After a connection error the
        transaction ran entirely or not at all; the receipt tells which, so a retry never adds a group
        twice."""
        records = [(group.policy_version, group.to_bytes()) for group in groups]
        receipt = f"{self.config.namespace}:put:{uuid.uuid4().hex}"
        failures = 0
        while True:
            try:
                return self._transaction(records, receipt)
            except (RedisConnectionError, RedisTimeoutError) as error:
                failures += 1
                if failures > self.retries:
                    raise
                self.retry.report(error)
                time.sleep(self.retry.backoff.compute(failures))
                if self.client.exists(receipt):
                    return self._sizes()  # applied; only the reply was lost

    def _transaction(self, records: list[tuple[int, bytes]], receipt: str) -> Sizes:
        pipe = self.writer.pipeline(transaction=True)
        self._flush_counts(pipe)  # sample-side counts ride along (telemetry: lost with a failed attempt)
        pipe.set(receipt, 1, ex=RECEIPT_TTL_S)
        for version, payload in records:
            pipe.xadd(self.keys["fresh"], {"pv": version, "data": payload})
        for version, count in Counter(version for version, _ in records).items():
            pipe.hincrby(self.keys["versions"], version, count)
        pipe.hincrby(self.keys["counters"], "put", len(records))
        self._queue_sizes(pipe)
        *_, stream_length, pending, replay, version = pipe.execute()
        return int(stream_length), int(pending["pending"]), int(replay), int(version or 0)

    def _sizes(self) -> Sizes:
        pipe = self.client.pipeline(transaction=True)
        self._queue_sizes(pipe)
        stream_length, pending, replay, version = pipe.execute()
        return int(stream_length), int(pending["pending"]), int(replay), int(version or 0)

    def _queue_sizes(self, pipe: Any) -> None:
        pipe.xlen(self.keys["fresh"])
        pipe.xpending(self.keys["fresh"], CONSUMER_GROUP)
        pipe.llen(self.keys["replay"])
        pipe.get(self.keys["version"])

    def put_offline(self, groups: list[ScoredGroup]) -> int:
        if not groups:
            return 0
        pipe = self.client.pipeline(transaction=True)  # one MULTI/EXEC: all groups or none
        pipe.rpush(self.keys["offline"], *[group.to_bytes() for group in groups])
        pipe.hincrby(self.keys["counters"], "put_offline", len(groups))
        pipe.execute()
        return len(groups)

    def recover(self) -> int:
        """Queue this consumer's pending entries (delivered before a crash, never acked) to be handed
        out first; with `claim_idle_s`, first take over other consumers' entries idle that long."""
        self._recovered = True
        if self.config.claim_idle_s > 0:
            self._claim_idle()
        known = {delivery_id for delivery_id, _, _ in self._queued}
        found: list[Entry] = []
        last = "0"
        while True:  # page through our pending entries list (XREADGROUP from an id reads the PEL)
            reply = self.client.xreadgroup(
                CONSUMER_GROUP, self.consumer, {self.keys["fresh"]: last}, count=1000
            )
            page = _entries(reply)
            if not page:
                break
            found += [entry for entry in page if entry[0] not in known]
            last = page[-1][0]
        self._queued = found + self._queued
        self._unflushed["redelivered"] += len(found)
        return len(found)

    def _claim_idle(self) -> None:
        """Make other consumers' idle pending entries ours; the PEL read in `recover` then returns them.
        (Not JUSTID: redis-py drops the next cursor from that reply.)"""
        start = "0-0"
        while True:
            next_start, *_ = self.client.xautoclaim(
                self.keys["fresh"], CONSUMER_GROUP, self.consumer,
                min_idle_time=int(self.config.claim_idle_s * 1000), start_id=start, count=100,
            )  # fmt: skip
            start = next_start.decode() if isinstance(next_start, bytes) else next_start
            if start == "0-0":
                return

    def sample(self, batch_groups: int, learner_version: int, on_policy_only: bool = False) -> SampledBatch:
        if not self._recovered:
            self.recover()
        sizes = (0, 0) if on_policy_only else self._pool_sizes()
        want = batch_groups if on_policy_only else round(self.config.on_policy_fraction * batch_groups)
        want = max(want, batch_groups - sum(sizes))  # fresh fills in when replay is short
        usable, stale = self._read_fresh(want, learner_version)
        plan = plan_batch(
            [FreshCandidate(delivery_id, version) for delivery_id, version, _ in usable],
            sum(sizes), batch_groups, learner_version,
            self.config.on_policy_fraction, self.config.max_staleness, on_policy_only,
        )  # fmt: skip
        take = set(plan.take)
        # Read but not used (replay covered more than planned): keep them first in line, still pending.
        self._queued = [entry for entry in usable if entry[0] not in take] + self._queued
        stale_moved, stale_dropped = self._settle_stale(
            [(entry_id, version) for entry_id, version, _ in stale]
        )
        fresh_groups = [ScoredGroup.from_bytes(data) for entry_id, _, data in usable if entry_id in take]
        self._delivered.update((entry_id, version) for entry_id, version, _ in usable if entry_id in take)
        replayed = self._sample_pools(plan.num_replay, *sizes)
        groups = fresh_groups + replayed
        self._unflushed.update(sampled=len(groups), delivered=len(fresh_groups), replayed=len(replayed))
        return SampledBatch(
            groups=groups,
            delivery_ids=list(plan.take),
            num_fresh=len(fresh_groups),
            num_replayed=len(replayed),
            stale_moved=stale_moved,
            stale_dropped=stale_dropped,
            staleness=[learner_version - group.policy_version for group in groups],
        )

    def _read_fresh(self, want: int, learner_version: int) -> tuple[list[Entry], list[Entry]]:
        """Up to `want` usable fresh entries (queued ones first), and the too-stale ones met on the way."""
        usable: list[Entry] = []
        stale: list[Entry] = []
        while len(usable) < want:
            if self._queued:
                batch, self._queued = self._queued[: want - len(usable)], self._queued[want - len(usable) :]
            else:
                pipe = self.client.pipeline(transaction=False)
                self._flush_counts(pipe)
                pipe.xreadgroup(
                    CONSUMER_GROUP, self.consumer, {self.keys["fresh"]: ">"}, count=want - len(usable)
                )
                batch = _entries(pipe.execute()[-1])
                if not batch:
                    break
            for entry in batch:
                too_old = learner_version - entry[1] > self.config.max_staleness
                (stale if too_old else usable).append(entry)
        return usable, stale

    def _settle_stale(self, entries: list[tuple[str, int | str]]) -> tuple[int, int]:
        if not entries:
            return 0, 0
        if self.config.stale_policy == "replay":
            return self._settle(entries, to_replay=True, counter="stale_moved"), 0
        return 0, self._settle(entries, to_replay=False, counter="stale_dropped")

    def ack(self, delivery_ids: list[str]) -> int:
        """Settle deliveries after the step that used them; acked groups join the replay pool. Any
        consumer may ack any delivery id (a restarted learner may ack what it checkpointed)."""
        if not delivery_ids:
            return 0
        # The version is known for what this client handed out; '' makes the script look it up.
        settled = self._settle([(i, self._delivered.get(i, "")) for i in delivery_ids], True, "acked")
        for delivery_id in delivery_ids:
            self._delivered.pop(delivery_id, None)
        return settled

    def _settle(self, entries: list[tuple[str, int | str]], to_replay: bool, counter: str) -> int:
        keys = [self.keys["fresh"], self.keys["replay"], self.keys["counters"], self.keys["versions"]]
        args: list[Any] = [CONSUMER_GROUP, int(to_replay), self.config.replay_capacity, counter]
        for entry_id, version in entries:
            args += [entry_id, version]
        settled, _ = self._settle_script(keys=keys, args=args)
        return int(settled)

    def _flush_counts(self, pipe: Any) -> None:
        for name, value in self._unflushed.items():
            if value:
                pipe.hincrby(self.keys["counters"], name, value)
        self._unflushed.clear()

    def _pool_sizes(self) -> tuple[int, int]:
        pipe = self.client.pipeline(transaction=False)
        pipe.llen(self.keys["replay"])
        pipe.llen(self.keys["offline"])
        replay, offline = pipe.execute()
        return int(replay), int(offline)

    def _sample_pools(self, count: int, replay_size: int, offline_size: int) -> list[ScoredGroup]:
        """`count` groups drawn uniformly without replacement from replay and offline together."""
        if count == 0:
            return []
        picks = self._rng.sample(range(replay_size + offline_size), min(count, replay_size + offline_size))
        pipe = self.client.pipeline(transaction=False)
        for index in picks:
            if index < replay_size:
                pipe.lindex(self.keys["replay"], index)  # an entry id
            else:
                pipe.lindex(self.keys["offline"], index - replay_size)  # a payload
        found = pipe.execute()
        for index, value in zip(picks, found, strict=True):
            if index < replay_size and value is not None:
                pipe.xrange(self.keys["fresh"], value, value)
        entries = iter(pipe.execute())
        payloads = []
        for index, value in zip(picks, found, strict=True):
            if index < replay_size and value is not None:
                value = next((fields[b"data"] for _, fields in next(entries)), None)
            payloads.append(value)
        # Evicted since the sizes were read: None, and that group is simply not replayed.
        return [ScoredGroup.from_bytes(payload) for payload in payloads if payload is not None]

    def set_learner_version(self, version: int) -> None:
        self.client.set(self.keys["version"], version)

    def learner_version(self) -> int:
        value = self.client.get(self.keys["version"])
        return int(value) if value is not None else 0

    def stats(self) -> BufferStats:
        pipe = self.client.pipeline(transaction=True)  # one consistent snapshot
        self._flush_counts(pipe)
        pipe.xlen(self.keys["fresh"])
        pipe.xpending(self.keys["fresh"], CONSUMER_GROUP)
        pipe.llen(self.keys["replay"])
        pipe.llen(self.keys["offline"])
        pipe.get(self.keys["version"])
        pipe.hgetall(self.keys["versions"])
        pipe.hgetall(self.keys["counters"])
        *_, stream_length, pending, replay, offline, version, versions, counters = pipe.execute()
        version = int(version) if version is not None else 0
        histogram: Counter[int] = Counter()
        for policy_version, held in versions.items():
            histogram[version - int(policy_version)] += int(held)
        merged = {name: 0 for name in COUNTERS} | {k.decode(): int(v) for k, v in counters.items()}
        merged["connection_retries"] = self.retry.failures.value  # this client's, not the server's
        depth = int(stream_length) - int(replay)  # the stream also holds the replay pool's entries
        return BufferStats(
            depth=depth,
            backlog=depth - int(pending["pending"]),
            pending=int(pending["pending"]),
            replay_size=int(replay),
            offline_size=int(offline),
            learner_version=version,
            staleness_histogram=dict(histogram),
            counters=merged,
        )

    def delete_all(self) -> None:
        """Remove every key of this namespace (tests, benchmarks)."""
        self._unflushed.clear()  # or close() would write the counters back
        self.client.delete(*self.keys.values())
        receipts = list(self.client.scan_iter(match=f"{self.config.namespace}:put:*", count=1000))
        for start in range(0, len(receipts), 1000):
            self.client.delete(*receipts[start : start + 1000])

    def close(self) -> None:
        if any(self._unflushed.values()):
            pipe = self.client.pipeline(transaction=False)
            self._flush_counts(pipe)
            pipe.execute()
        self.client.close()
        self.writer.close()


def _entries(reply: Any) -> list[Entry]:
    """XREADGROUP's reply [[stream, [(id, fields), ...]]] as entries; deleted ones (fields None) skipped."""
    if not reply:
        return []
    return [
        (entry_id.decode(), int(fields[b"pv"]), fields[b"data"])
        for _, entries in reply
        for entry_id, fields in entries
        if fields is not None
    ]


__all__ = ["RedisBuffer"]
