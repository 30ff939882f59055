"""The memory buffer served from a named Ray actor, so actors and the learner share one instance.

Records cross the process boundary as msgpack bytes (ScoredGroup.to_bytes), not as pickled objects,
the same as through Redis. The actor outlives a learner crash; the restarted learner calls
`recover()` to get its unacked deliveries back.
"""

import ray

from services.buffer.memory import MemoryBuffer
from services.buffer.protocol import BufferStats, PutResult, SampledBatch
from services.config.buffer import BufferConfig
from services.schemas import ScoredGroup


@ray.remote(num_cpus=0, max_restarts=0)
class BufferActor:
    def __init__(self, config_json: str, seed: int):
        self.buffer = MemoryBuffer(BufferConfig.model_validate_json(config_json), seed=seed)

    def put(self, payloads: list[bytes]) -> PutResult:
        return self.buffer.put([ScoredGroup.from_bytes(p) for p in payloads])

    def put_offline(self, payloads: list[bytes]) -> int:
        return self.buffer.put_offline([ScoredGroup.from_bytes(p) for p in payloads])

    def sample(
        self, batch_groups: int, learner_version: int, on_policy_only: bool
    ) -> tuple[list[bytes], dict]:
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

    def set_learner_version(self, version: int) -> None:
        self.buffer.set_learner_version(version)

    def learner_version(self) -> int:
        return self.buffer.learner_version()

    def stats(self) -> BufferStats:
        return self.buffer.stats()


class RemoteBuffer:
    """The ExperienceBuffer protocol over a BufferActor handle."""

    def __init__(self, handle: ray.actor.ActorHandle):
        self.handle = handle

    @classmethod
    def start(cls, config: BufferConfig, name: str, seed: int = 0) -> "RemoteBuffer":
        handle = BufferActor.options(name=name, get_if_exists=True).remote(config.model_dump_json(), seed)
        return cls(handle)

    @classmethod
    def connect(cls, name: str) -> "RemoteBuffer":
        return cls(ray.get_actor(name))

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

    def set_learner_version(self, version: int) -> None:
        ray.get(self.handle.set_learner_version.remote(version))

    def learner_version(self) -> int:
        return ray.get(self.handle.learner_version.remote())

    def stats(self) -> BufferStats:
        return ray.get(self.handle.stats.remote())

    def close(self) -> None:
        """The actor belongs to the run, not to this handle."""
