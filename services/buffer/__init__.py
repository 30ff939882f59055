"""The experience buffer between actors and learner: Redis (durable, shared) or in-process (embedded).

`open_buffer(config)` gives the configured implementation in this process; the embedded default is
shared across processes through `services.buffer.remote` (a Ray actor).
"""

from services.buffer.memory import MemoryBuffer
from services.buffer.mixing import FreshCandidate, MixPlan, plan_batch
from services.buffer.protocol import BufferStats, ExperienceBuffer, PutResult, SampledBatch
from services.config.buffer import BufferConfig


def open_buffer(config: BufferConfig, consumer: str = "learner-0", seed: int = 0) -> ExperienceBuffer:
    """The buffer `config.kind` names, usable from this process."""
    if config.kind == "redis":
        from services.buffer.redis_buffer import RedisBuffer

        return RedisBuffer(config, consumer=consumer, seed=seed)
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
