"""The durable, shared experience buffer on Redis (the only module that imports redis).

Layout under the key prefix `<namespace>`:
  :fresh     stream of groups (fields `pv` = policy version, `data` = msgpack payload), read through
             the consumer group `learners`; an entry stays pending until acked (the learner acks
             once a checkpoint holds the step that used it), so a learner killed before that gets it
             again when it recovers (its own pending entries, plus, with `claim_idle_s`, other
             consumers' idle ones via XAUTOCLAIM; a live learner keeps the entries it holds from
             looking idle, see `_keep_held`). Acked entries stay here while the replay pool refers
             to them.
  :versions  hash policy version -> fresh (unacked) groups of that version (the staleness histogram)
  :replay    list of :fresh entry ids, newest first, at most `replay_capacity` (FIFO eviction of the
             oldest, which deletes its entry)
  :offline   list of ingested off-policy groups (not evicted)
  :version   the learner's policy version;  :counters  hash of event counts
  :put:<id>  receipt of one put (kept an hour), read only to retry a put whose reply was lost
  :run       the run marker: which run's learner uses this namespace (`claim_namespace`, JSON)
Every write is atomic and safe to retry after a lost reply (a retry must not store or replay a group
twice): acks and stale settlements are Lua scripts (redis_scripts.py) that act only on entries still
pending; a put is one MULTI/EXEC that also sets a receipt `:put:<uuid>`, sent on a connection without
automatic retry, and retried by `_write_new` only after that receipt says it was not applied.
(Payloads stay out of Lua, where each 30 KB argument or reply costs a conversion.)
`put` returns after Redis replied. What that promises is `buffer.durability`, checked against the
server when the buffer opens (`durability_plan`): with `always` the groups are on disk first, through
WAITAOF after the put (Redis >= 7.2) or because the server fsyncs before replying (`appendfsync
always`). Payloads are msgpack, never pickle. Connection errors are retried with exponential
backoff; each failed attempt is logged and counted.
"""

import json
import logging
import random
import time
import uuid
from collections import Counter
from typing import Any, Literal

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from core.buffer.mixing import FreshCandidate, draw_pools, offline_cap, plan_batch, pool_available
from core.buffer.protocol import (
    COUNTERS,
    BufferStats,
    DurabilityError,
    NamespaceInUseError,
    PutResult,
    SampledBatch,
    UnconfirmedPutError,
)
from core.buffer.redis_scripts import CLAIM, SETTLE, TOUCH
from core.config.buffer import BufferConfig
from core.redaction import redact_url
from core.schemas import ScoredGroup

log = logging.getLogger(__name__)
CONSUMER_GROUP = "learners"
RECEIPT_TTL_S = 3600  # a put's receipt outlives any retry of it (8 retries back off for ~10 s in all)
Entry = tuple[str, int, bytes]  # delivery id, policy version, payload
Sizes = tuple[int, int, int, int]  # stream length, pending, replay size, learner version
WAITAOF_TIMEOUT_MS = 10_000  # far above a disk's fsync; a put not on disk by then is reported
WAITAOF_SINCE = (7, 2)
# What makes a put durable: nothing checked, the server's fsync before its reply, or WAITAOF after it.
DurabilityPlan = Literal["none", "server", "waitaof"]


def durability_plan(
    mode: str, version: tuple[int, ...], appendonly: bool, appendfsync: str | None, where: str
) -> DurabilityPlan:
    """How the buffer keeps `buffer.durability=mode` on a server of `version` with these AOF settings
    (`appendfsync` None: the server would not say), or a DurabilityError naming what to set.

    Redis's persistence docs: with `appendfsync always` the AOF is written and fsynced once per batch
    of commands "before sending the replies", so a reply means the write is on disk. WAITAOF (7.2)
    gives the same guarantee on any fsync policy, at one more round trip per put."""
    if mode == "none":
        return "none"
    running = (
        f"{where} runs Redis {'.'.join(map(str, version))} with appendonly={'yes' if appendonly else 'no'}, "
        f"appendfsync={appendfsync or 'unknown (CONFIG GET refused)'}"
    )
    if not appendonly:
        raise DurabilityError(
            f"buffer.durability={mode} needs the append-only file, but {running}: start redis-server with "
            f"--appendonly yes --appendfsync {mode} (or CONFIG SET appendonly yes), or set "
            "buffer.durability: none to run without the guarantee"
        )
    if mode == "everysec":
        if appendfsync in ("everysec", "always"):
            return "server"
        raise DurabilityError(
            f"buffer.durability=everysec needs appendfsync everysec or always, but {running}: start "
            "redis-server with --appendfsync everysec, or set buffer.durability: none"
        )
    if appendfsync == "always":
        return "server"  # fsynced before the reply: WAITAOF would only add a round trip
    if version >= WAITAOF_SINCE:
        return "waitaof"
    raise DurabilityError(
        f"buffer.durability=always needs Redis >= 7.2 (WAITAOF) or appendfsync always, but {running}: "
        "start redis-server with --appendonly yes --appendfsync always (or CONFIG SET appendfsync always), "
        "or set buffer.durability: everysec to accept losing the last second of puts in a crash"
    )


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

    def __init__(
        self,
        config: BufferConfig,
        consumer: str = "learner-0",
        seed: int = 0,
        retries: int = 8,
        check_durability: bool = True,
    ):
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
            for name in ("fresh", "versions", "replay", "offline", "version", "counters", "run")
        }
        self._settle_script = self.client.register_script(SETTLE)
        self._claim_script = self.client.register_script(CLAIM)
        self._rng = random.Random(seed)
        self._queued: list[Entry] = []  # read from Redis (pending for us) but not yet handed out
        self._delivered: dict[str, int] = {}  # handed out, not yet acked: id -> policy version
        self._touch_script = self.client.register_script(TOUCH)
        self._touched_at = time.monotonic()  # when `_keep_held` last refreshed the held ids' idle time
        self._recovered = False
        # Sample-side counts ride along with the next pipeline instead of costing a round trip.
        self._unflushed: Counter[str] = Counter()
        # Readers (`tandem buffer stats`, `clear`) store no groups and need not check durability.
        self.durability: DurabilityPlan = self._check_durability() if check_durability else "none"
        self._ensure_group()

    def _check_durability(self) -> DurabilityPlan:
        """Refuse to start unless the server can keep `buffer.durability` (see `durability_plan`)."""
        if self.config.durability == "none":
            return "none"
        info = self.client.info("server")
        version = tuple(int(part) for part in str(info["redis_version"]).split(".")[:2])
        try:
            settings = self.client.config_get("append*")
            appendonly = settings.get("appendonly") == "yes"
            appendfsync: str | None = settings.get("appendfsync")
        except ResponseError:  # CONFIG renamed or forbidden (managed Redis): INFO still says if AOF is on
            appendonly = bool(self.client.info("persistence").get("aof_enabled"))
            appendfsync = None
        where = f"the Redis server at {redact_url(self.config.redis_url)}"
        plan = durability_plan(self.config.durability, version, appendonly, appendfsync, where)
        log.info("buffer.durability=%s: %s", self.config.durability,
                 "WAITAOF after each put" if plan == "waitaof" else f"appendfsync {appendfsync}")  # fmt: skip
        return plan

    def _confirm_aof(self, receipt: str) -> None:
        """With WAITAOF: block until the AOF holding this put is fsynced. WAITAOF waits for the writes of
        its own connection, so a write goes first on the same connection (a pipeline is one): the AOF
        is one sequential file, so that write's offset on disk means every earlier write is too, the
        put's transaction included, whichever connection carried it."""
        pipe = self.writer.pipeline(transaction=False)
        pipe.set(receipt, 1, ex=RECEIPT_TTL_S)
        pipe.execute_command("WAITAOF", 1, 0, WAITAOF_TIMEOUT_MS)
        _, (local, _replicas) = pipe.execute()
        if int(local) < 1:
            raise UnconfirmedPutError(
                f"Redis did not confirm the AOF fsync of a put within {WAITAOF_TIMEOUT_MS} ms (disk full or "
                "stalled?): the groups are stored but may not survive a crash"
            )

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
        applied: Sizes | None = None
        while True:
            try:
                if applied is None:
                    applied = self._transaction(records, receipt)
                if self.durability == "waitaof":
                    self._confirm_aof(receipt)
                return applied
            except (RedisConnectionError, RedisTimeoutError) as error:
                failures += 1
                if failures > self.retries:
                    raise
                self.retry.report(error)
                time.sleep(self.retry.backoff.compute(failures))
                if applied is None and self.client.exists(receipt):
                    applied = self._sizes()  # applied; only the reply was lost (its fsync is confirmed next)

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
        if self.durability == "waitaof":
            self._confirm_aof(f"{self.config.namespace}:put:{uuid.uuid4().hex}")
        return len(groups)

    def claim_namespace(self, resume: bool, owner: str = "") -> None:
        """See the protocol. One script, so two fresh runs started together cannot both pass the check."""
        marker = json.dumps({"owner": owner, "claimed_at": time.time(), "resume": resume})
        keys = [self.keys[name] for name in ("run", "fresh", "replay", "version")]
        previous, stream, pending, replay, version = self._claim_script(
            keys=keys, args=[CONSUMER_GROUP, int(resume), marker]
        )
        if previous is None and not (pending or replay or version is not None):
            if stream:
                log.warning("namespace %s: %d fresh group(s) put before this run's learner started will be "
                            "trained on", self.config.namespace, stream)  # fmt: skip
            return
        if resume:
            log.info("namespace %s: resumed run takes over from %s", self.config.namespace,
                     _owner(previous))  # fmt: skip
            return
        found = [f"run marker of {_owner(previous)}"] if previous is not None else []
        found += [f"{pending} pending group(s)"] if pending else []
        found += [f"{replay} replay group(s)"] if replay else []
        found += [f"learner version {version.decode()}"] if version is not None else []
        namespace = self.config.namespace
        raise NamespaceInUseError(
            f"buffer namespace {namespace!r} on {redact_url(self.config.redis_url)} holds a previous "
            f"run's data ({', '.join(found)}), which a fresh run would train on: pass --resume to continue "
            f"that run, empty it with `tandem buffer clear {namespace}` (the offline pool is kept), or "
            "choose another buffer.namespace"
        )

    def clear(self, keep_offline: bool = True) -> int:
        """Remove this namespace's run data (fresh stream, consumer group, replay, version, counters,
        receipts, run marker) and, unless `keep_offline`, the offline pool; returns the keys removed."""
        self._unflushed.clear()  # or close() would write the counters back
        keys = [key for name, key in self.keys.items() if not (keep_offline and name == "offline")]
        removed = int(self.client.delete(*keys))
        receipts = list(self.client.scan_iter(match=f"{self.config.namespace}:put:*", count=1000))
        for start in range(0, len(receipts), 1000):
            removed += int(self.client.delete(*receipts[start : start + 1000]))
        self._ensure_group()  # this client may still put
        return removed

    def recover(self) -> int:
        """Queue this consumer's pending entries (delivered before a crash, never acked) to be handed
        out first; with `claim_idle_s`, first take over other consumers' entries idle that long."""
        self._recovered = True
        if self.config.claim_idle_s > 0:
            self._claim_idle()
        # Entries this client holds (handed out, awaiting the checkpoint that acks them) are pending for
        # us too, but a live learner is training on them: handing them out again would train them twice.
        known = {delivery_id for delivery_id, _, _ in self._queued} | set(self._delivered)
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

    def pending_ids(self) -> set[str]:
        """The delivery ids of every consumer's pending (delivered, unacked) groups: for audits, e.g.
        `python -m learner.ledger RUN` holding a run's ledger against the buffer."""
        pending: set[str] = set()
        start = "-"
        while True:
            page = self.client.xpending_range(
                self.keys["fresh"], CONSUMER_GROUP, min=start, max="+", count=1000
            )
            pending.update(entry["message_id"].decode() for entry in page)
            if len(page) < 1000:
                return pending
            start = "(" + page[-1]["message_id"].decode()

    def _keep_held(self) -> None:
        """With `claim_idle_s`, reset the idle time of the deliveries this learner holds, at most every
        quarter of `claim_idle_s`: a learner acks only at checkpoints, so its groups stay pending for many
        steps, and another consumer's `recover` would otherwise claim them as a dead learner's."""
        if self.config.claim_idle_s <= 0 or not (self._delivered or self._queued):
            return
        if time.monotonic() - self._touched_at < self.config.claim_idle_s / 4:
            return
        held = [*self._delivered, *(delivery_id for delivery_id, _, _ in self._queued)]
        for start in range(0, len(held), 1000):
            self._touch_script(
                keys=[self.keys["fresh"]], args=[CONSUMER_GROUP, self.consumer, *held[start : start + 1000]]
            )
        self._touched_at = time.monotonic()

    def sample(self, batch_groups: int, learner_version: int, on_policy_only: bool = False) -> SampledBatch:
        if not self._recovered:
            self.recover()
        self._keep_held()
        sizes = (0, 0) if on_policy_only else self._pool_sizes()
        cap = offline_cap(batch_groups, self.config.offline_fraction)
        available = pool_available(*sizes, cap)
        want = batch_groups if on_policy_only else round(self.config.on_policy_fraction * batch_groups)
        want = max(want, batch_groups - available)  # fresh fills in when replay is short
        usable, stale = self._read_fresh(want, learner_version)
        plan = plan_batch(
            [FreshCandidate(delivery_id, version) for delivery_id, version, _ in usable],
            available, batch_groups, learner_version,
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
        replayed = self._sample_pools(plan.num_replay, *sizes, cap)
        sampled = len(fresh_groups) + len(replayed)
        self._unflushed.update(sampled=sampled, delivered=len(fresh_groups), replayed=len(replayed))
        return SampledBatch.mix(
            fresh_groups, replayed, list(plan.take), learner_version, stale_moved, stale_dropped
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

    def _sample_pools(self, count: int, replay_size: int, offline_size: int, cap: int) -> list[ScoredGroup]:
        """`count` groups drawn uniformly without replacement from replay and offline together, at most
        `cap` of them offline (mixing.draw_pools)."""
        if count == 0:
            return []
        replay_picks, offline_picks = draw_pools(self._rng, count, replay_size, offline_size, cap)
        picks = replay_picks + [replay_size + index for index in offline_picks]  # one index space
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
        self._keep_held()  # a learner waiting for fresh groups polls stats, not sample
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
        self.clear(keep_offline=False)
        self.client.delete(self.keys["fresh"])  # the group `clear` made again for this client

    def close(self) -> None:
        if any(self._unflushed.values()):
            pipe = self.client.pipeline(transaction=False)
            self._flush_counts(pipe)
            pipe.execute()
        self.client.close()
        self.writer.close()


def _owner(marker: bytes | None) -> str:
    """Who a run marker names, for messages."""
    try:
        return json.loads(marker or b"{}").get("owner") or "an unnamed run"
    except (ValueError, AttributeError):
        return "an unreadable marker"


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
