"""The learner's main loop: steps, acks, versioned publishing, checkpoints with an HF export, resume."""

from pathlib import Path

import pytest
import torch
from learner_support import learner_config, sampled_groups
from transformers import AutoModelForCausalLM

from learner.checkpoint import latest_checkpoint
from learner.run import Learner
from services.buffer import MemoryBuffer
from services.weight_sync import decode_weights
from services.weight_sync.filesystem import FilesystemPublisher, FilesystemSubscriber, published_versions

pytestmark = pytest.mark.slow


def test_run_publishes_checkpoints_and_resumes_where_it_stopped(
    tiny_arith_model: Path, tmp_path: Path
) -> None:
    config = learner_config(
        tiny_arith_model, tmp_path / "run", "learner.max_steps=3", "learner.checkpoint_every=2",
        "learner.sync_every=1", "learner.batch_groups=4", "buffer.replay_capacity=0",
    )  # fmt: skip
    buffer = MemoryBuffer(config.buffer)
    buffer.put(sampled_groups(tiny_arith_model, prompts=16, seed=1))
    weights = tmp_path / "weights"
    records: list[dict] = []
    learner = Learner(config, buffer, FilesystemPublisher(weights, keep_versions=10), sink=records.append)
    state = learner.run()

    assert (state.step, state.policy_version) == (3, 3)
    assert [r["step"] for r in records] == [1, 2, 3] and [r["policy_version"] for r in records] == [1, 2, 3]
    assert all(r["loss"] == r["loss"] and r["tokens_per_s"] > 0 for r in records)
    assert published_versions(weights) == [0, 1, 2, 3]  # v0 = the initial weights
    stats = buffer.stats()
    assert (stats.backlog, stats.pending, stats.counters["acked"]) == (4, 0, 12)
    assert buffer.learner_version() == 3
    latest = FilesystemSubscriber(weights).latest()
    assert latest is not None
    published = decode_weights(latest)["model.norm.weight"]
    assert torch.equal(published, learner.engine.module.state_dict()["model.norm.weight"])

    checkpoint = latest_checkpoint(config.run.run_dir)
    assert checkpoint is not None and checkpoint.name == "step-00000002"
    exported = AutoModelForCausalLM.from_pretrained(checkpoint / "hf")
    assert (checkpoint / "hf" / "tokenizer.json").is_file()
    assert exported.config.vocab_size == 258

    # A new learner resumes from the step-2 checkpoint: step, version, weights and optimizer state.
    resumed = Learner(config, buffer, FilesystemPublisher(weights, keep_versions=10), resume=True)
    assert (resumed.state.step, resumed.state.policy_version) == (2, 2)
    for name, tensor in resumed.engine.module.state_dict().items():
        assert torch.equal(tensor, exported.state_dict()[name]), name
    optimizer_state = resumed.engine.optimizer.state_dict()
    assert optimizer_state, "optimizer state restored"
    resumed.run()
    assert resumed.state.step == 3 and published_versions(weights)[-1] == 3
