"""`collective` transport, receiving side: the actor's subscriber and the worker's receiver.

Two processes play a part on an actor. The actor process (`CollectiveSubscriber`) only watches the
store's `latest` key and hands the engine a `CollectiveOffer`, a few bytes. The engine passes the offer
to each vLLM worker, where a `CollectiveReceiver` joins the learner's store (once per learner session;
again after any failure, or when the worker is a new process), asks for the newest version and yields
its tensors bucket by bucket, each bucket checked against the fingerprint its sender computed before
its tensors are handed on. The bytes thus go from the learner's snapshot straight into the worker's
weight loading, never through the actor process or a file.
"""

import datetime
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from core.weight_sync.buckets import Plan, fingerprint, view
from core.weight_sync.channel import Channel, device_for, listen_host, open_channel
from core.weight_sync.manifest import WeightSyncError
from core.weight_sync.rendezvous import JOINS, LATEST, Rendezvous, pair_prefix, read_rendezvous

PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class CollectiveOffer:
    """What the actor's subscriber hands the engine: the newest version and where to fetch it."""

    version: int
    digest: str
    rendezvous: Rendezvous
    timeout_s: float = 60.0


def _reachable(rendezvous: Rendezvous) -> bool:
    """A plain TCP probe first: a TCPStore client retries (and logs) for its whole timeout when the
    learner is gone, which would stall every batch of an actor whose learner has stopped."""
    try:
        with socket.create_connection((rendezvous.host, rendezvous.port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def connect(rendezvous: Rendezvous, timeout_s: float) -> dist.TCPStore | None:
    if not _reachable(rendezvous):
        return None
    return dist.TCPStore(
        rendezvous.host, rendezvous.port, is_master=False, timeout=datetime.timedelta(seconds=timeout_s)
    )


def read_latest(store: dist.Store) -> dict | None:
    if not store.check([LATEST]):
        return None
    return json.loads(store.get(LATEST))


class CollectiveSubscriber:
    """The actor process's view: the newest announced version, found through the rendezvous file."""

    def __init__(self, directory: Path, timeout_s: float = 60.0) -> None:
        self.directory = Path(directory)
        self.timeout_s = timeout_s
        self._rendezvous: Rendezvous | None = None
        self._store: dist.TCPStore | None = None

    def _latest(self) -> tuple[dict, Rendezvous] | None:
        rendezvous = read_rendezvous(self.directory)
        if rendezvous is None:
            return None  # no learner has started yet
        if rendezvous != self._rendezvous or self._store is None:
            self._store = connect(rendezvous, self.timeout_s)
            self._rendezvous = rendezvous if self._store is not None else None
            if self._store is None:
                return None  # the learner is gone (or restarting): nothing newer to load now
        try:
            latest = read_latest(self._store)
        except dist.DistError:
            self._store = None  # the learner went away; reconnect on the next call
            return None
        return None if latest is None else (latest, rendezvous)

    def latest_version(self) -> int | None:
        found = self._latest()
        return None if found is None else int(found[0]["version"])

    def latest(self) -> CollectiveOffer | None:
        found = self._latest()
        if found is None:
            return None
        latest, rendezvous = found
        return CollectiveOffer(int(latest["version"]), str(latest["digest"]), rendezvous, self.timeout_s)


class CollectiveReceiver:
    """One receiver's membership (a vLLM worker's): its pair group with the learner and its requests."""

    def __init__(self, rendezvous: Rendezvous, name: str, timeout_s: float = 60.0) -> None:
        self.rendezvous = rendezvous
        self.timeout_s = timeout_s
        store = connect(rendezvous, timeout_s)
        if store is None:
            raise WeightSyncError(
                f"the learner's weight store at {rendezvous.host}:{rendezvous.port} is gone"
            )
        latest = read_latest(store)
        if latest is None:
            raise WeightSyncError("no weights have been published yet")
        self.store = store
        self.join = int(store.add(JOINS, 1))
        self.prefix = pair_prefix(self.join)
        store.set(f"{self.prefix}name", name)
        self.device = device_for(str(latest["backend"]))
        backend = str(latest["backend"])
        host = listen_host(rendezvous.host)
        self.channel: Channel = open_channel(store, self.prefix, 1, backend, timeout_s, host)
        self.requests = 0

    def request(self) -> "Incoming":
        """Ask for the newest version; returns its plan and the stream of its buckets."""
        number = self.requests
        self.requests += 1
        self.store.set(f"{self.prefix}req/{number}", "")
        answer = f"{self.prefix}resp/{number}"
        try:
            self.store.wait([answer], datetime.timedelta(seconds=self.timeout_s))
        except dist.DistError as error:
            raise WeightSyncError(
                f"the learner did not answer a weight request in {self.timeout_s:.0f} s"
            ) from error
        plan = Plan.from_json(self.store.get(answer).decode())
        self.store.delete_key(answer)
        return Incoming(self, plan)

    def close(self) -> None:
        self.channel.close()


class Incoming:
    """One version on its way in. Iterate `tensors()` to the end exactly once; `complete` says so."""

    def __init__(self, receiver: CollectiveReceiver, plan: Plan) -> None:
        self.receiver = receiver
        self.plan = plan
        self.received = 0
        self.wait_s = 0.0  # blocked waiting for buckets to arrive (diagnostics: where a load's time goes)
        self.fingerprint_s = 0.0  # checking them

    @property
    def version(self) -> int:
        return self.plan.version

    @property
    def complete(self) -> bool:
        return self.received == len(self.plan.buckets)

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, tensor) of every slot, bucket by bucket; a bucket whose fingerprint disagrees with
        its sender's raises `WeightSyncError` before any of its tensors is handed on."""
        channel = self.receiver.channel
        buckets = self.plan.buckets
        pending = self._post(0)
        for index, bucket in enumerate(buckets):
            assert pending is not None
            buffer, work = pending
            started = time.perf_counter()
            channel.wait(work)
            waited = time.perf_counter()
            # The next bucket arrives while this one is checked and loaded.
            pending = self._post(index + 1)
            found = fingerprint(buffer)
            self.wait_s += waited - started
            self.fingerprint_s += time.perf_counter() - waited
            if found != bucket.fingerprint:
                raise WeightSyncError(
                    f"weights v{self.plan.version}: bucket {index} of {len(self.plan.buckets)} arrived "
                    f"with fingerprint {found}, its sender computed {bucket.fingerprint}"
                )
            self.received += 1
            for slot in bucket.slots:
                yield slot.name, view(buffer, slot)

    def _post(self, index: int) -> tuple[torch.Tensor, dist.Work] | None:
        if index >= len(self.plan.buckets):
            return None
        # A fresh buffer per bucket: the loader may hold on to views of earlier buckets until their
        # layer is complete, so buffers are never reused.
        buffer = torch.empty(self.plan.buckets[index].nbytes, dtype=torch.uint8, device=self.receiver.device)
        return buffer, self.receiver.channel.post_recv(buffer, tag=index)
