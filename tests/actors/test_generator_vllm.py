"""One generation actor end to end with real parts: vLLM on the tiny model, the reward server over
HTTP, the in-process buffer, filesystem weight sync. (The Ray pool and restarts: test_pool.py.)"""

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from actors.dead_letter import read_dead_letters
from core.config import TandemConfig
from core.config.reward import RewardConfig
from core.weight_sync.filesystem import FilesystemPublisher
from services.embedded_server import free_port, serve

pytestmark = pytest.mark.slow

ARITHMETIC_SCORER = {"name": "exact_match", "type": "exact_match", "pattern": r"^\s*(-?\d+)"}


def actor_config(model: Path, run_dir: Path, reward_url: str) -> TandemConfig:
    return TandemConfig.model_validate(
        {
            "run": {"name": "gen-test", "run_dir": str(run_dir), "seed": 0},
            "model": {"path": str(model)},
            "actors": {
                "n_samples": 4,
                "prompts_per_batch": 8,
                "max_tokens": 6,
                "train_prompts": str(model / "prompts" / "train.jsonl"),
                "pause_s": 0.05,
                "reward_outage_s": 0.2,
            },
            "reward": {"url": reward_url, "scorers": [ARITHMETIC_SCORER], "client_retries": 1},
            "weight_sync": {"transport": "filesystem"},
        }
    )


@pytest.fixture(scope="module")
def reward_url() -> Iterator[str]:
    from reward_server.app import create_app

    with serve(create_app(RewardConfig.model_validate({"scorers": [ARITHMETIC_SCORER]}))) as url:
        yield url


@pytest.fixture(scope="module")
def generator(tiny_arith_model: Path, tmp_path_factory: pytest.TempPathFactory, reward_url: str):  # type: ignore[no-untyped-def]
    from actors.generator import Generator

    config = actor_config(tiny_arith_model, tmp_path_factory.mktemp("run"), reward_url)
    generator = Generator(config, index=0, shared_buffer=False)
    yield generator
    generator.close()


def test_generates_scores_and_pushes_groups_with_behaviour_logprobs(generator) -> None:  # type: ignore[no-untyped-def]
    stats = generator.run(max_batches=2)
    assert stats["groups_pushed"] == 16 and stats["groups_dead_lettered"] == 0
    batch = generator.worker.buffer.sample(16, learner_version=0)
    assert len(batch.groups) == 16
    for group in batch.groups:
        assert len(group.samples) == 4 and group.policy_version == 0 and group.all_scored
        assert set(group.rewards) <= {0.0, 1.0}
        for sample in group.samples:
            assert len(sample.behaviour_logprobs) == len(sample.completion_token_ids) >= 1
            assert all(lp <= 0 and math.isfinite(lp) for lp in sample.behaviour_logprobs)
            assert sample.actor_id == "gen-test-actor-0"
    rewards = [r for g in batch.groups for r in g.rewards]
    print(f"\nreward mean over {len(rewards)} samples at v0: {sum(rewards) / len(rewards):.3f}")
    assert stats["tokens_generated"] > 0 and stats["generate_tokens_per_s"] > 0
    generator.worker.buffer.ack(batch.delivery_ids)


def test_evaluation_scores_greedy_completions_of_held_out_prompts(generator) -> None:  # type: ignore[no-untyped-def]
    result = generator.evaluate(limit=40)
    print(f"\neval at v{result['policy_version']}: {result}")
    assert result["eval_items"] == 40 and result["eval_failed"] == 0
    assert 0.0 <= result["eval_reward_mean"] <= 1.0
    assert generator.evaluate(limit=40)["eval_reward_mean"] == result["eval_reward_mean"]  # greedy


def test_published_weights_change_what_is_generated(generator, tiny_arith_model: Path) -> None:  # type: ignore[no-untyped-def]
    """Publish v1 = the policy with its final norm zeroed: every logit is 0, so every sampled token
    has log-prob -log(vocab). Samples made after the load carry v1 and show exactly that."""
    model = AutoModelForCausalLM.from_pretrained(tiny_arith_model, torch_dtype=torch.float32)
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    state["model.norm.weight"].zero_()
    directory = generator.config.run.run_dir / "weights"
    FilesystemPublisher(directory).publish(state, version=1)
    generator.run(max_batches=1)
    assert generator.engine.policy_version == 1
    batch = generator.worker.buffer.sample(8, learner_version=1, on_policy_only=True)
    assert batch.groups and all(group.policy_version == 1 for group in batch.groups)
    uniform = -math.log(model.config.vocab_size)
    worst = max(abs(lp - uniform) for g in batch.groups for s in g.samples for lp in s.behaviour_logprobs)
    print(f"\nafter v1: max |logprob - (-log V)| = {worst:.2e}")
    assert worst < 1e-4


def test_reward_server_failures_are_dead_lettered_not_zeroed(generator) -> None:  # type: ignore[no-untyped-def]
    generator.client.url = f"http://127.0.0.1:{free_port()}/v1/score"  # the reward server is gone
    before = generator.worker.buffer.stats().counters["put"]
    stats = generator.run(max_batches=1)
    assert generator.worker.buffer.stats().counters["put"] == before
    assert stats["groups_dead_lettered"] == 8
    letters = read_dead_letters(generator.config.run.run_dir / "dead_letter")
    assert len(letters) == 8 and all("unreachable" in letter["reason"] for letter in letters)
    assert all(sample["reward"] is None for letter in letters for sample in letter["samples"])


def test_a_cpu_actor_runs_its_engine_in_its_own_process(generator) -> None:  # type: ignore[no-untyped-def]
    # No engine-core or worker process to spawn and import (actors.engine_in_process): the client
    # is vLLM's in-process one and the engine's worker lives here.
    client = generator.engine.llm.llm_engine.engine_core
    assert type(client).__name__ == "InprocClient"


def test_the_engine_in_process_default_follows_the_actor_hardware() -> None:
    from actors.generator import engine_in_process
    from core.config.actors import ActorsConfig

    assert engine_in_process(ActorsConfig())
    assert not engine_in_process(ActorsConfig(num_gpus=1))
    assert not engine_in_process(ActorsConfig(tensor_parallel_size=2))
    assert not engine_in_process(ActorsConfig(engine_in_process=False))
    assert engine_in_process(ActorsConfig(num_gpus=1, engine_in_process=True))
