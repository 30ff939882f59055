"""The `collective` transport over gloo between this process (learner) and receiver processes.

Bucketing round-trips exactly, several versions arrive as the newest, a fingerprint mismatch is
refused, a late or restarted receiver gets the newest version, and a hung or dead receiver never
holds up the learner's publish beyond taking its snapshot.
"""

import time
from pathlib import Path

import pytest
import torch

from core.config.run import RunConfig
from core.config.weight_sync import WeightSyncConfig
from core.weight_sync import open_publisher, open_subscriber, resolve_transport
from core.weight_sync.buckets import Plan, fingerprint, pack, plan_buckets, view
from core.weight_sync.collective_publisher import CollectivePublisher
from core.weight_sync.collective_receiver import CollectiveSubscriber
from core.weight_sync.rendezvous import read_rendezvous
from tests.core.weight_sync.collective_support import ReceiverProcess


def weights(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "model.embed_tokens.weight": torch.randn(64, 32, generator=generator),
        "model.layers.0.input_layernorm.weight": torch.randn(32, generator=generator),
        "model.layers.0.mlp.down_proj.weight": torch.randn(32, 96, generator=generator).to(torch.bfloat16),
        "model.layers.0.self_attn.q_proj.bias": torch.randn(7, generator=generator).to(torch.float16),
        "model.norm.weight": torch.randn(32, generator=generator),
        "step": torch.tensor([seed], dtype=torch.int64),
    }


def assert_same(received: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert received.keys() == expected.keys()
    for name, tensor in expected.items():
        assert received[name].dtype == tensor.dtype and torch.equal(received[name], tensor), name


def test_buckets_round_trip_and_fingerprints_catch_corruption() -> None:
    state = weights(0)
    plan, buffers = pack(state, plan_buckets(state, 3, bucket_bytes=4096), torch.device("cpu"))
    assert len(plan.buckets) > 2  # the embedding alone is 8 KiB: a bucket of its own
    assert Plan.from_json(plan.to_json()) == plan
    unpacked = {slot.name: view(buffers[i], slot) for i, b in enumerate(plan.buckets) for slot in b.slots}
    assert_same(unpacked, state)
    for buffer, bucket in zip(buffers, plan.buckets, strict=True):
        assert fingerprint(buffer) == bucket.fingerprint
    flipped = buffers[0].clone()
    flipped[5] ^= 1  # one bit
    assert fingerprint(flipped)[0] != plan.buckets[0].fingerprint[0]
    words = buffers[1].clone().view(torch.int32)
    words[[0, 1]] = words[[1, 0]]  # two words trade places: the sum cannot see it, the ordered sample can
    assert fingerprint(words.view(torch.uint8)) != plan.buckets[1].fingerprint
    assert fingerprint(torch.zeros_like(buffers[0])) != plan.buckets[0].fingerprint


def test_auto_means_collective_on_one_machine_and_ray_on_a_cluster(tmp_path: Path) -> None:
    config = WeightSyncConfig()
    assert config.transport == "auto"
    assert resolve_transport(config, RunConfig(run_dir=tmp_path)) == "collective"
    assert resolve_transport(config, RunConfig(run_dir=tmp_path, ray_address="auto")) == "ray"
    publisher = open_publisher(config, RunConfig(run_dir=tmp_path))
    assert isinstance(publisher, CollectivePublisher)
    subscriber = open_subscriber(config, RunConfig(run_dir=tmp_path))
    assert isinstance(subscriber, CollectiveSubscriber) and subscriber.latest() is None
    publisher.publish(weights(1), version=0)
    assert subscriber.latest_version() == 0
    publisher.close()


@pytest.fixture
def publisher(tmp_path: Path):  # type: ignore[no-untyped-def]
    publisher = CollectivePublisher(tmp_path, bucket_bytes=4096, timeout_s=3.0)
    yield publisher
    publisher.close()


@pytest.fixture
def receivers(tmp_path: Path):  # type: ignore[no-untyped-def]
    started: list[ReceiverProcess] = []

    def start() -> ReceiverProcess:
        started.append(ReceiverProcess(tmp_path, timeout_s=3.0))
        return started[-1]

    yield start
    for receiver in started:
        receiver.stop()


def test_versions_arrive_bucketed_and_newest_first(publisher: CollectivePublisher, receivers) -> None:  # type: ignore[no-untyped-def]
    receiver = receivers()
    assert receiver.ask("sync")[0] == "error"  # before any publish: nothing to load
    publisher.publish(weights(1), version=1)
    status, version, tensors, offered = receiver.ask("sync")
    assert (status, version, offered) == ("ok", 1, 1)
    assert_same(tensors, weights(1))
    first = buffer_addresses(publisher)
    publisher.publish(weights(2), version=2)
    publisher.publish(weights(3), version=3)
    assert buffer_addresses(publisher) == first  # no send in progress: overwritten in place
    status, version, tensors, _ = receiver.ask("sync")
    assert (status, version) == ("ok", 3)  # the newest, not every version in between
    assert_same(tensors, weights(3))
    assert publisher.served == 2


def buffer_addresses(publisher: CollectivePublisher) -> list[int]:
    assert publisher._current is not None
    return [buffer.data_ptr() for buffer in publisher._current.buffers]


def test_a_corrupt_bucket_is_refused_then_a_rejoin_gets_good_weights(  # type: ignore[no-untyped-def]
    publisher: CollectivePublisher, receivers
) -> None:
    receiver = receivers()
    publisher.publish(weights(1), version=1)
    snapshot = publisher._current
    assert snapshot is not None
    snapshot.buffers[2][3] ^= 0x10  # the snapshot changed after its fingerprint was taken
    status, message = receiver.ask("sync")
    assert status == "error" and "WeightSyncError" in message and "bucket 2" in message and "v1" in message
    publisher.publish(weights(2), version=2)
    status, version, tensors, _ = receiver.ask("sync")  # joins again: a broken stream is not resumed
    assert (status, version) == ("ok", 2)
    assert_same(tensors, weights(2))


def test_late_and_restarted_receivers_get_the_newest_version(  # type: ignore[no-untyped-def]
    publisher: CollectivePublisher, receivers, tmp_path: Path
) -> None:
    first = receivers()
    publisher.publish(weights(1), version=1)
    assert first.ask("sync")[1] == 1
    publisher.publish(weights(2), version=2)
    first.kill()  # an actor dies; Ray would start a new process in its place
    publisher.publish(weights(3), version=3)
    late = receivers()
    status, version, tensors, _ = late.ask("sync")
    assert (status, version) == ("ok", 3)
    assert_same(tensors, weights(3))
    assert read_rendezvous(tmp_path) == publisher.rendezvous


def test_a_hung_or_dead_receiver_never_blocks_the_learner(tmp_path: Path, receivers) -> None:  # type: ignore[no-untyped-def]
    big = {"w": torch.randn(4 << 20)}  # 16 MiB: more than the sockets buffer, so the send blocks
    publisher = CollectivePublisher(tmp_path, bucket_bytes=16 << 20, timeout_s=2.0)
    try:
        publisher.publish(big, version=1)
        hung = receivers()
        assert hung.ask("stall") == ("stalled", 1)  # asked, then never reads
        in_flight = buffer_addresses(publisher)
        started = time.monotonic()
        for version in (2, 3):
            publisher.publish(big, version=version)  # the sender thread is stuck: publish is not
        assert time.monotonic() - started < 1.5
        # v1's buffers are being sent: v2 got fresh ones (v3 then reused v2's, which nobody reads).
        assert not set(buffer_addresses(publisher)) & set(in_flight)
        healthy = receivers()
        assert healthy.ask("sync")[:2] == ("ok", 3)  # another receiver is served meanwhile
        deadline = time.monotonic() + 10
        while publisher.failed_receivers < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert publisher.failed_receivers == 1  # the hung one was dropped after the timeout
        hung.kill()
        assert healthy.ask("sync")[:2] == ("ok", 3)
    finally:
        publisher.close()


def test_close_ends_every_sender_thread_even_one_waiting_for_a_request(  # type: ignore[no-untyped-def]
    tmp_path: Path, receivers
) -> None:
    # A sender thread left blocked in the store's wait at interpreter exit aborts the process.
    publisher = CollectivePublisher(tmp_path, bucket_bytes=4096, timeout_s=3.0)
    publisher.publish(weights(1), version=1)
    idle = receivers()
    assert idle.ask("sync")[:2] == ("ok", 1)  # joined; its sender thread now waits for the next request
    threads = [publisher._accept, *publisher._senders]
    assert len(threads) == 2 and all(thread.is_alive() for thread in threads)
    started = time.monotonic()
    publisher.close()
    assert not any(thread.is_alive() for thread in threads)
    assert time.monotonic() - started < 3.0  # woken, not left to its 600 s wait
    publisher.close()  # twice is harmless
