"""The in-process experience buffer: the embedded default (served to other processes by remote.py).

Same semantics as the Redis buffer: a fresh queue delivered once, deliveries pending until acked and
handed out again by `recover()` (a learner that restarts calls it), a bounded FIFO replay pool, an
unbounded offline pool. Thread-safe (one lock): actors and the learner may call it concurrently.
"""

import random
import threading
from collections import Counter, deque
from itertools import count

from core.buffer.mixing import FreshCandidate, draw_pools, offline_cap, plan_batch, pool_available
from core.buffer.protocol import COUNTERS, BufferStats, NamespaceInUseError, PutResult, SampledBatch
from core.config.buffer import BufferConfig
from core.schemas import ScoredGroup


class MemoryBuffer:
    def __init__(self, config: BufferConfig, seed: int = 0):
        self.config = config
        self._lock = threading.Lock()
        self._fresh: deque[tuple[str, ScoredGroup]] = deque()
        self._pending: dict[str, ScoredGroup] = {}
        self._replay: deque[ScoredGroup] = deque()
        self._offline: list[ScoredGroup] = []
        self._version = 0
        self._ids = count()
        self._rng = random.Random(seed)
        self._counters: Counter[str] = Counter({name: 0 for name in COUNTERS})
        self._owner: str | None = None  # the run whose learner uses this buffer (`claim_namespace`)

    def put(self, groups: list[ScoredGroup]) -> PutResult:
        with self._lock:
            self._fresh.extend((f"m-{next(self._ids)}", group) for group in groups)
            self._counters["put"] += len(groups)
            backlog = len(self._fresh)
            paused = backlog >= self.config.high_water
            self._counters["paused_signals"] += int(paused)
            return PutResult(len(groups), backlog, paused, learner_version=self._version)

    def put_offline(self, groups: list[ScoredGroup]) -> int:
        with self._lock:
            self._offline.extend(groups)
            self._counters["put_offline"] += len(groups)
            return len(groups)

    def sample(self, batch_groups: int, learner_version: int, on_policy_only: bool = False) -> SampledBatch:
        with self._lock:
            candidates = [FreshCandidate(delivery_id, g.policy_version) for delivery_id, g in self._fresh]
            cap = offline_cap(batch_groups, self.config.offline_fraction)
            available = pool_available(len(self._replay), len(self._offline), cap)
            plan = plan_batch(
                candidates,
                replay_available=0 if on_policy_only else available,
                batch_groups=batch_groups,
                learner_version=learner_version,
                on_policy_fraction=self.config.on_policy_fraction,
                max_staleness=self.config.max_staleness,
                on_policy_only=on_policy_only,
            )
            by_id = dict(self._fresh)
            taken = set(plan.take) | set(plan.too_stale)
            self._fresh = deque(item for item in self._fresh if item[0] not in taken)
            stale_moved, stale_dropped = self._settle_stale([by_id[i] for i in plan.too_stale])
            fresh_groups = [by_id[delivery_id] for delivery_id in plan.take]
            self._pending.update(zip(plan.take, fresh_groups, strict=True))
            replay_picks, offline_picks = draw_pools(
                self._rng, plan.num_replay, len(self._replay), len(self._offline), cap
            )
            replayed = [self._replay[i] for i in replay_picks] + [self._offline[i] for i in offline_picks]
            sampled = len(fresh_groups) + len(replayed)
            self._counters.update(sampled=sampled, delivered=len(fresh_groups), replayed=len(replayed))
            return SampledBatch.mix(
                fresh_groups, replayed, list(plan.take), learner_version, stale_moved, stale_dropped
            )

    def _settle_stale(self, stale: list[ScoredGroup]) -> tuple[int, int]:
        if self.config.stale_policy == "drop":
            self._counters["stale_dropped"] += len(stale)
            return 0, len(stale)
        for group in stale:
            self._add_to_replay(group)
        self._counters["stale_moved"] += len(stale)
        return len(stale), 0

    def ack(self, delivery_ids: list[str]) -> int:
        with self._lock:
            acked = 0
            for delivery_id in delivery_ids:
                group = self._pending.pop(delivery_id, None)
                if group is not None:
                    self._add_to_replay(group)
                    acked += 1
            self._counters["acked"] += acked
            return acked

    def recover(self) -> int:
        """Hand pending (delivered, unacked) groups out again, oldest first: the learner restarted."""
        with self._lock:
            pending = list(self._pending.items())
            self._pending.clear()
            self._fresh.extendleft(reversed(pending))
            self._counters["redelivered"] += len(pending)
            return len(pending)

    def claim_namespace(self, resume: bool, owner: str = "") -> None:
        """Same rule as the Redis buffer's: a fresh run refuses a buffer a learner has used."""
        with self._lock:
            used = self._owner is not None or self._pending or self._replay or self._counters["delivered"]
            if used and not resume:
                raise NamespaceInUseError(
                    f"buffer namespace {self.config.namespace!r} (memory) is in use by "
                    f"{self._owner or 'another learner'}, which a fresh run would train on: pass --resume "
                    f"to continue that run, or choose another buffer.namespace"
                )
            self._owner = owner or "an unnamed run"

    def set_learner_version(self, version: int) -> None:
        with self._lock:
            self._version = version

    def learner_version(self) -> int:
        with self._lock:
            return self._version

    def stats(self) -> BufferStats:
        with self._lock:
            held = [group for _, group in self._fresh] + list(self._pending.values())
            return BufferStats(
                depth=len(held),
                backlog=len(self._fresh),
                pending=len(self._pending),
                replay_size=len(self._replay),
                offline_size=len(self._offline),
                learner_version=self._version,
                staleness_histogram=dict(Counter(self._version - group.policy_version for group in held)),
                counters=dict(self._counters),
            )

    def close(self) -> None:
        """Nothing to release; present for the Protocol."""

    def _add_to_replay(self, group: ScoredGroup) -> None:
        if self.config.replay_capacity == 0:
            self._counters["evicted"] += 1
            return
        self._replay.append(group)
        while len(self._replay) > self.config.replay_capacity:
            self._replay.popleft()
            self._counters["evicted"] += 1
