"""The `ray` transport over a real local Ray runtime: versions move forward, survive the publisher."""

import sys

import pytest
import ray
import ray.cloudpickle
import torch

from core.weight_sync import WeightSyncError, decode_weights
from core.weight_sync.ray_transport import RayPublisher, RaySubscriber, weight_store
from tests.ray_support import fresh_ray_init

# Test modules are not importable on Ray workers; ship this module's functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def ray_runtime():  # type: ignore[no-untyped-def]
    fresh_ray_init(num_cpus=1, include_dashboard=False, log_to_driver=False, namespace="tandem-tests")
    yield
    ray.shutdown()


def weights(value: float) -> dict[str, torch.Tensor]:
    return {"layer.weight": torch.full((3, 3), value), "layer.bias": torch.arange(3, dtype=torch.float32)}


def test_subscriber_before_any_learner_sees_nothing_then_finds_the_store(ray_runtime) -> None:  # type: ignore[no-untyped-def]
    # An actor may start before the learner: it sees no version yet, then finds the store once created.
    subscriber = RaySubscriber("late-learner")
    assert subscriber.latest_version() is None and subscriber.latest() is None
    with pytest.raises(WeightSyncError, match="has the learner started"):
        weight_store("late-learner", create=False)
    RayPublisher("late-learner").publish(weights(1.0), version=0)
    assert subscriber.latest_version() == 0


def test_publish_then_fetch_latest_verified(ray_runtime) -> None:  # type: ignore[no-untyped-def]
    publisher = RayPublisher("run-a")
    subscriber = RaySubscriber("run-a")
    assert subscriber.latest() is None
    publisher.publish(weights(1.0), version=1)
    manifest = publisher.publish(weights(2.0), version=2)
    latest = subscriber.latest()
    assert latest is not None and latest.version == 2 == subscriber.latest_version()
    assert latest.manifest == manifest
    assert torch.equal(decode_weights(latest)["layer.weight"], torch.full((3, 3), 2.0))


def test_versions_only_move_forward(ray_runtime) -> None:  # type: ignore[no-untyped-def]
    publisher = RayPublisher("run-b")
    publisher.publish(weights(1.0), version=5)
    with pytest.raises(ray.exceptions.RayTaskError, match="v5"):
        publisher.publish(weights(0.0), version=4)
    assert RaySubscriber("run-b").latest_version() == 5


def test_a_resumed_learner_may_announce_the_same_weights_again(ray_runtime) -> None:  # type: ignore[no-untyped-def]
    publisher = RayPublisher("run-d")
    publisher.publish(weights(1.0), version=5)
    publisher.publish(weights(1.0), version=5)  # identical: a re-announcement
    with pytest.raises(ray.exceptions.RayTaskError, match="v5"):
        publisher.publish(weights(2.0), version=5)  # other weights under a used number
    latest = RaySubscriber("run-d").latest()
    assert latest is not None and decode_weights(latest)["layer.weight"][0, 0].item() == 1.0


def test_weights_outlive_the_publishing_process(ray_runtime) -> None:  # type: ignore[no-untyped-def]
    @ray.remote(num_cpus=0)
    def publish_and_exit() -> int:
        RayPublisher("run-c").publish(weights(7.0), version=3)
        return 3

    assert ray.get(publish_and_exit.remote()) == 3  # that worker's task is over; its objects may go
    latest = RaySubscriber("run-c").latest()
    assert latest is not None and torch.equal(decode_weights(latest)["layer.weight"], torch.full((3, 3), 7.0))
