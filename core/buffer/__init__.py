"""The experience buffer between actors and learner: Redis (durable, shared) or in-process (embedded).

`open_buffer(config)` gives the configured implementation; for `kind: memory`, `shared=True` serves
it from a named Ray actor (remote.py) so every process of the run sees the same buffer.
"""

from core.buffer.memory import MemoryBuffer
from core.buffer.mixing import FreshCandidate, MixPlan, plan_batch
from core.buffer.protocol import BufferStats, ExperienceBuffer, PutResult, SampledBatch
from core.config.buffer import BufferConfig


def open_buffer(
    config: BufferConfig,
    consumer: str = "learner-0",
    seed: int = 0,
    shared: bool = False,
    cpus: list[int] | None = None,
) -> ExperienceBuffer:
    """The buffer `config.kind` names. `consumer` names a Redis learner (stable across its restarts);
    `shared` starts or joins the Ray-served memory buffer (Ray must be initialised) instead of a
    private in-process one, pinned to `cpus` when it starts it."""
    if config.kind == "redis":
        from core.buffer.redis_buffer import RedisBuffer

        return RedisBuffer(config, consumer=consumer, seed=seed)
    if shared:
        from core.buffer.remote import RemoteBuffer

        return RemoteBuffer.start(config, seed=seed, cpus=cpus)
    return MemoryBuffer(config, seed=seed)


__all__ = [
    "BufferStats",
    "ExperienceBuffer",
    "FreshCandidate",
    "MemoryBuffer",
    "MixPlan",
    "PutResult",
    "SampledBatch",
    "open_buffer",
    "plan_batch",
]
