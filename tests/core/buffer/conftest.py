"""Buffer fixtures: every implementation behind one factory, a session Ray, and a private redis-server."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from buffer_support import SHARED_REDIS, BufferFactory, PrivateRedis, RewardServer

from core.buffer import ExperienceBuffer, MemoryBuffer
from core.buffer.redis_buffer import RedisBuffer
from core.buffer.remote import RemoteBuffer
from core.config.buffer import BufferConfig


@pytest.fixture(scope="session")
def ray_runtime() -> Iterator[None]:
    """One small Ray for the whole session (it takes ~5 s to start), started only if a test asks."""
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, namespace="tandem-buffer-tests")
    yield
    ray.shutdown()


@pytest.fixture(params=["memory", "redis", "ray"])
def new_buffer(request: pytest.FixtureRequest) -> Iterator[BufferFactory]:
    """Builds buffers of one kind: in-process memory; Redis, in a fresh namespace on the running
    server shared by the buffers of one test (as by the processes of one run); or the memory buffer
    behind its Ray actor, one actor per call (an existing actor keeps its first config)."""
    namespace = f"tandem-test-{uuid.uuid4().hex[:10]}"
    made: list[ExperienceBuffer] = []
    if request.param == "ray":
        request.getfixturevalue("ray_runtime")

    def factory(consumer: str = "learner-0", **fields: object) -> ExperienceBuffer:
        name = f"{namespace}-{len(made)}" if request.param == "ray" else namespace
        kind = "redis" if request.param == "redis" else "memory"
        config = BufferConfig(kind=kind, redis_url=SHARED_REDIS, namespace=name, **fields)
        buffer: ExperienceBuffer
        if request.param == "memory":
            buffer = MemoryBuffer(config)
        elif request.param == "redis":
            buffer = RedisBuffer(config, consumer=consumer)
        else:
            buffer = RemoteBuffer.start(config)
        made.append(buffer)
        return buffer

    yield factory
    for buffer in made:
        if isinstance(buffer, RedisBuffer):
            buffer.delete_all()
        elif isinstance(buffer, RemoteBuffer):
            import ray

            ray.kill(buffer.handle)
        buffer.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    if server.process and server.process.poll() is None:
        server.kill()


@pytest.fixture
def reward_server() -> Iterator[RewardServer]:
    server = RewardServer()
    yield server
    server.http.shutdown()
