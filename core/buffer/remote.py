"""The memory buffer served from a named Ray actor, so actors and the learner share one instance.

Records cross the process boundary as msgpack bytes (ScoredGroup.to_bytes), not as pickled objects,
the same as through Redis. The actor is named after `buffer.namespace` in the Ray namespace "tandem",
so any process of the cluster finds it whatever namespace its own job uses. It belongs to the
process that started it (the driver) and so outlives a learner crash; the restarted learner calls
`recover()` to get its unacked deliveries back. Nothing survives the driver: use `kind: redis` for that.
"""

import os

import ray

from core.affinity import apply_cpu_affinity
from core.buffer.memory import MemoryBuffer
from core.buffer.protocol import BufferStats, NamespaceInUseError, PutResult, SampledBatch
from core.config.buffer import BufferConfig
from core.gc_heap import freeze_startup_objects
from core.schemas import ScoredGroup

RAY_NAMESPACE = "tandem"


def actor_name(config: BufferConfig) -> str:
    return f"buffer:{config.namespace}"


@ray.remote(num_cpus=0, max_restarts=0)
class BufferActor:
    """Ray's actor model runs one call at a time here, so the MemoryBuffer's lock is uncontended."""

    def __init__(self, config_json: str, seed: int, cpus: list[int] | None = None):
        apply_cpu_affinity(cpus, "the buffer actor's CPUs")
        self.buffer = MemoryBuffer(BufferConfig.model_validate_json(config_json), seed=seed)
        freeze_startup_objects()  # a full collection over torch's objects stalled puts by 250 ms

    def put(self, payloads: list[bytes]) -> PutResult:
        return self.buffer.put([ScoredGroup.from_bytes(p) for p in payloads])

    def put_offline(self, payloads: list[bytes]) -> int:
        return self.buffer.put_offline([ScoredGroup.from_bytes(p) for p in payloads])

    def sample(
        self, batch_groups: int, learner_version: int, on_policy_only: bool
    ) -> tuple[list[bytes], dict[str, object]]:
        batch = self.buffer.sample(batch_groups, learner_version, on_policy_only)
        summary = {
            "delivery_ids": batch.delivery_ids,
            "num_fresh": batch.num_fresh,
            "num_replayed": batch.num_replayed,
            "stale_moved": batch.stale_moved,
            "stale_dropped": batch.stale_dropped,
            "staleness": batch.staleness,
        }
        return [group.to_bytes() for group in batch.groups], summary

    def ack(self, delivery_ids: list[str]) -> int:
        return self.buffer.ack(delivery_ids)

    def recover(self) -> int:
        return self.buffer.recover()

    def claim_namespace(self, resume: bool, owner: str) -> str | None:
        """The refusal's message, or None: an exception would reach the caller wrapped by Ray."""
        try:
            self.buffer.claim_namespace(resume, owner)
        except NamespaceInUseError as error:
            return str(error)
        return None

    def set_learner_version(self, version: int) -> None:
        self.buffer.set_learner_version(version)

    def learner_version(self) -> int:
        return self.buffer.learner_version()

    def stats(self) -> BufferStats:
        return self.buffer.stats()

    def cpus(self) -> list[int]:
        return sorted(os.sched_getaffinity(0))


class RemoteBuffer:
    """The ExperienceBuffer protocol over a BufferActor handle."""

    def __init__(self, handle: ray.actor.ActorHandle):
        self.handle = handle

    @classmethod
    def start(cls, config: BufferConfig, seed: int = 0, cpus: list[int] | None = None) -> "RemoteBuffer":
        """The run's buffer actor, created if it does not exist yet (an existing one keeps its config
        and CPUs); `cpus` pins a new one (the driver gives it the actors' CPUs in a split layout, so
        its work stays off the learner's)."""
        options = {"name": actor_name(config), "namespace": RAY_NAMESPACE, "get_if_exists": True}
        return cls(BufferActor.options(**options).remote(config.model_dump_json(), seed, cpus))

    def cpus(self) -> list[int]:
        """The CPUs the buffer actor's process may run on (diagnostics, tests)."""
        return ray.get(self.handle.cpus.remote())

    @classmethod
    def connect(cls, config: BufferConfig, ray_address: str | None = None) -> "RemoteBuffer":
        """The running buffer actor, joining the Ray cluster at `ray_address` ("auto": the local one)
        when this process is not in one yet (the CLI)."""
        if not ray.is_initialized():
            try:
                ray.init(address=ray_address or "auto", include_dashboard=False, log_to_driver=False)
            except ConnectionError as error:
                raise LookupError(
                    f"no Ray cluster at {ray_address or 'auto'} to find the buffer in: {error}"
                ) from None
        try:
            return cls(ray.get_actor(actor_name(config), namespace=RAY_NAMESPACE))
        except ValueError:
            raise LookupError(
                f"no buffer actor {actor_name(config)!r} in Ray namespace {RAY_NAMESPACE!r}: is a run with "
                "buffer.kind=memory and this buffer.namespace going?"
            ) from None

    def put(self, groups: list[ScoredGroup]) -> PutResult:
        return ray.get(self.handle.put.remote([group.to_bytes() for group in groups]))

    def put_offline(self, groups: list[ScoredGroup]) -> int:
        return ray.get(self.handle.put_offline.remote([group.to_bytes() for group in groups]))

    def sample(self, batch_groups: int, learner_version: int, on_policy_only: bool = False) -> SampledBatch:
        payloads, summary = ray.get(self.handle.sample.remote(batch_groups, learner_version, on_policy_only))
        return SampledBatch(groups=[ScoredGroup.from_bytes(p) for p in payloads], **summary)

    def ack(self, delivery_ids: list[str]) -> int:
        return ray.get(self.handle.ack.remote(delivery_ids))

    def recover(self) -> int:
        return ray.get(self.handle.recover.remote())

    def claim_namespace(self, resume: bool, owner: str = "") -> None:
        refusal = ray.get(self.handle.claim_namespace.remote(resume, owner))
        if refusal is not None:
            raise NamespaceInUseError(refusal)

    def set_learner_version(self, version: int) -> None:
        ray.get(self.handle.set_learner_version.remote(version))

    def learner_version(self) -> int:
        return ray.get(self.handle.learner_version.remote())

    def stats(self) -> BufferStats:
        return ray.get(self.handle.stats.remote())

    def close(self) -> None:
        """The actor belongs to the run, not to this handle."""
