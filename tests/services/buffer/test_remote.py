"""The memory buffer served from a Ray actor: the same semantics from another process."""

import pytest
import ray
from buffer_support import make_group

from services.buffer.remote import RemoteBuffer
from services.config.buffer import BufferConfig


@pytest.fixture(scope="module")
def ray_runtime():  # type: ignore[no-untyped-def]
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, namespace="tandem-buffer-tests")
    yield
    ray.shutdown()


def test_remote_buffer_round_trip_ack_and_recover(ray_runtime) -> None:  # type: ignore[no-untyped-def]
    buffer = RemoteBuffer.start(BufferConfig(on_policy_fraction=1.0, high_water=2), name="buffer-a")
    assert buffer.put([make_group("g0"), make_group("g1")]).paused is True
    batch = buffer.sample(2, learner_version=0, on_policy_only=True)
    assert [g.group_id for g in batch.groups] == ["g0", "g1"] and batch.groups[0] == make_group("g0")
    buffer.ack(batch.delivery_ids[:1])
    # A second handle, as a restarted learner would get by name, sees the same buffer.
    again = RemoteBuffer.connect("buffer-a")
    assert again.recover() == 1
    assert [g.group_id for g in again.sample(2, learner_version=0, on_policy_only=True).groups] == ["g1"]
    assert again.stats().replay_size == 1
