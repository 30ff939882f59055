"""Each end-to-end run starts its own Ray: none may inherit a runtime an earlier test module left up."""

from collections.abc import Iterator

import pytest
import ray


@pytest.fixture(autouse=True)
def no_inherited_ray_runtime() -> Iterator[None]:
    if ray.is_initialized():
        ray.shutdown()
    yield
