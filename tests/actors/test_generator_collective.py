"""One generation actor on the `collective` transport, wired as in a run: `open_publisher` on the
learner side, the actor's subscriber from its config, the rollout loop syncing between batches, and
every sample stamped with the version its engine streamed in."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from core.config.reward import RewardConfig
from core.config.weight_sync import WeightSyncConfig
from core.weight_sync import open_publisher
from core.weight_sync.collective_publisher import CollectivePublisher
from services.embedded_server import serve
from tests.actors.test_generator_vllm import ARITHMETIC_SCORER, actor_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reward_url() -> Iterator[str]:
    from reward_server.app import create_app

    with serve(create_app(RewardConfig.model_validate({"scorers": [ARITHMETIC_SCORER]}))) as url:
        yield url


def test_the_rollout_loop_streams_new_versions_and_stamps_samples(  # type: ignore[no-untyped-def]
    tiny_arith_model: Path, tmp_path: Path, reward_url: str
) -> None:
    from actors.generator import Generator

    config = actor_config(tiny_arith_model, tmp_path / "run", reward_url)
    config = config.model_copy(update={"weight_sync": WeightSyncConfig(transport="auto")})
    publisher = open_publisher(config.weight_sync, config.run)
    assert isinstance(publisher, CollectivePublisher)  # `auto` on one machine
    state = AutoModelForCausalLM.from_pretrained(tiny_arith_model, dtype=torch.float32).state_dict()
    publisher.publish(state, version=0)
    generator = Generator(config, index=0, shared_buffer=False)
    try:
        assert generator.engine.policy_version == 0
        shifted = {
            name: tensor + 0.01 if tensor.is_floating_point() else tensor for name, tensor in state.items()
        }
        publisher.publish(shifted, version=1)
        stats = generator.run(max_batches=1)
        assert stats["weight_loads"] >= 1 and stats["policy_version"] == 1
        batch = generator.worker.buffer.sample(8, learner_version=1)
        assert batch.groups and all(sample.policy_version == 1 for g in batch.groups for sample in g.samples)
        assert generator.engine.reload_warnings == []
    finally:
        generator.close()
        publisher.close()
