"""Buffer fixtures: both implementations behind one factory, and a private redis-server."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from buffer_support import SHARED_REDIS, BufferFactory, PrivateRedis

from services.buffer import MemoryBuffer
from services.buffer.redis_buffer import RedisBuffer
from services.config.buffer import BufferConfig


@pytest.fixture(params=["memory", "redis"])
def new_buffer(request: pytest.FixtureRequest) -> Iterator[BufferFactory]:
    """Builds buffers of one kind; redis ones share a fresh namespace on the running server."""
    namespace = f"tandem-test-{uuid.uuid4().hex[:10]}"
    made: list[RedisBuffer] = []

    def factory(consumer: str = "learner-0", **fields: object) -> MemoryBuffer | RedisBuffer:
        config = BufferConfig(kind=request.param, redis_url=SHARED_REDIS, namespace=namespace, **fields)
        if request.param == "memory":
            return MemoryBuffer(config)
        buffer = RedisBuffer(config, consumer=consumer)
        made.append(buffer)
        return buffer

    yield factory
    for buffer in made:
        buffer.delete_all()
        buffer.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    if server.process and server.process.poll() is None:
        server.kill()
