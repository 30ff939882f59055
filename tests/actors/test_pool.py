"""The Ray pool with a real vLLM actor: it pushes groups to the Ray-served buffer, and when its process
is killed Ray restarts it, it catches up to the newest published weights before generating again,
and the pool resumes its loop."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import torch
from transformers import AutoModelForCausalLM

from core.buffer.remote import RemoteBuffer
from core.config import TandemConfig
from core.config.reward import RewardConfig
from core.weight_sync.filesystem import FilesystemPublisher
from services.embedded_server import serve
from tests.actors.test_generator_vllm import ARITHMETIC_SCORER, actor_config
from tests.ray_support import fresh_ray_init

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[None]:
    fresh_ray_init(num_cpus=2, include_dashboard=False, namespace="tandem", log_to_driver=False)
    yield
    ray.shutdown()


def wait_for(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)


def test_a_killed_actor_comes_back_on_the_latest_weights(
    ray_runtime, tiny_arith_model: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from actors.pool import GeneratorPool
    from reward_server.app import create_app

    with serve(create_app(RewardConfig.model_validate({"scorers": [ARITHMETIC_SCORER]}))) as url:
        config: TandemConfig = actor_config(tiny_arith_model, tmp_path / "run", url)
        buffer = RemoteBuffer.start(config.buffer)
        pool = GeneratorPool(config)
        try:
            (ready,) = pool.wait_ready()
            assert ready["policy_version"] == 0
            pool.start()
            wait_for(lambda: buffer.stats().counters["put"] >= 8, 120, "the first groups")

            model = AutoModelForCausalLM.from_pretrained(tiny_arith_model, torch_dtype=torch.float32)
            FilesystemPublisher(config.run.run_dir / "weights").publish(model.state_dict(), version=3)
            pool.kill(0)
            events: list[str] = []

            def back_and_generating() -> bool:
                events.extend(pool.supervise(1.0))
                return pool.restarts[0] == 1 and 0 in pool.runs

            wait_for(back_and_generating, 180, "the actor to come back")
            assert "died" in events[0] and "back on weights v3" in events[-1], events
            assert pool.restarts == [1]
            stale = buffer.sample(64, learner_version=3)
            buffer.ack(stale.delivery_ids)

            def fresh_groups_at_v3() -> bool:
                pool.supervise(0.0)
                return any(g.policy_version == 3 for g in buffer.sample(64, learner_version=3).groups)

            wait_for(fresh_groups_at_v3, 120, "groups made by the restarted actor")
            (stats,) = pool.stats()
            assert stats["policy_version"] == 3 and stats["restarts"] == 1 and stats["weight_loads"] == 1
        finally:
            pool.stop(timeout_s=60)
            pool.shutdown()
