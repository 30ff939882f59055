"""The learner's main loop: steps, acks, versioned publishing, per-step metrics, checkpoints with an HF
export (the last step always checkpointed), resume, and bad groups met while sampling."""

import math
import time
from pathlib import Path

import pytest
import torch
from learner_support import learner_config, sampled_groups
from transformers import AutoModelForCausalLM

from core.buffer import MemoryBuffer
from core.schemas import Sample, ScoredGroup
from core.weight_sync import decode_weights
from core.weight_sync.filesystem import FilesystemPublisher, FilesystemSubscriber, published_versions
from learner.checkpoint import latest_checkpoint
from learner.run import Learner
from learner.step import BadDataError

pytestmark = pytest.mark.slow

# What every step must report (issue 7): the loss and its inputs, the batch's make-up, the optimizer.
STEP_METRICS = (
    "loss", "reward_mean", "reward_std", "kl", "on_policy_fraction", "staleness_histogram", "grad_norm",
    "lr", "tokens_per_s", "step_time_s", "iteration_time_s", "sample_wait_s", "publish_time_s",
)  # fmt: skip


def test_run_publishes_reports_checkpoints_and_resumes(tiny_arith_model: Path, tmp_path: Path) -> None:
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
    for record in records:
        missing = [key for key in STEP_METRICS if key not in record]
        assert not missing, f"step {record['step']} lacks {missing}"
        numbers = [record[key] for key in STEP_METRICS if key not in ("staleness_histogram", "kl")]
        assert all(math.isfinite(value) for value in numbers), record
        # `kl` is over fresh (staleness 0) rows only: a number when there are some, else None.
        assert (record["kl"] is not None) == (record["rows_fresh"] > 0), record
        assert record["lr"] == 1e-3 and record["on_policy_fraction"] == 1.0 and record["tokens_per_s"] > 0
        assert record["grad_norm"] > 0 and record["reward_std"] >= 0 and record["step_time_s"] > 0
    # Groups made by v0, sampled by a learner at v0, v1, v2: staleness 0, 1, 2 (all four groups).
    assert [r["staleness_histogram"] for r in records] == [{0: 4}, {1: 4}, {2: 4}]
    assert abs(records[0]["kl"]) < 1e-6  # the policy starts at the reference
    # Steps 2 and 3 train on the v0 groups again, now stale: no KL estimate, their h is the replayed one.
    assert records[2]["kl"] is None and abs(records[2]["h_mean_replayed"]) > 1e-6
    assert published_versions(weights) == [0, 1, 2, 3]  # v0 = the initial weights
    stats = buffer.stats()
    assert (stats.backlog, stats.pending, stats.counters["acked"]) == (4, 0, 12)
    assert buffer.learner_version() == 3
    latest = FilesystemSubscriber(weights).latest()
    assert latest is not None
    published = decode_weights(latest)["model.norm.weight"]
    assert torch.equal(published, learner.engine.module.state_dict()["model.norm.weight"])

    checkpoints = sorted(p.name for p in (config.run.run_dir / "checkpoints").glob("step-*"))
    assert checkpoints == ["step-00000002", "step-00000003"]  # every 2 steps, and the last one
    checkpoint = latest_checkpoint(config.run.run_dir)
    assert checkpoint is not None and checkpoint.name == "step-00000003"
    exported = AutoModelForCausalLM.from_pretrained(checkpoint / "hf")
    assert (checkpoint / "hf" / "tokenizer.json").is_file()
    assert exported.config.vocab_size == 258

    # A new learner resumes from the step-3 checkpoint: step, version, weights and optimizer state,
    # and goes on for one more step with the remaining groups.
    more = config.model_copy(update={"learner": config.learner.model_copy(update={"max_steps": 4})})
    resumed = Learner(
        more, buffer, FilesystemPublisher(weights, keep_versions=10), sink=records.append, resume=True
    )
    restored, republished = records[-2:]
    assert restored == {
        "event": "resumed", "checkpoint": str(checkpoint), "step": 3, "policy_version": 3,
        "optimizer_steps": 3, "reacked": 0,  # the step-3 checkpoint's groups were acked after it
    }  # fmt: skip
    for name, tensor in resumed.engine.module.state_dict().items():
        assert torch.equal(tensor, exported.state_dict()[name]), name
    # The restored weights go out at once, as v4: v3 was announced already, and a number names one set.
    assert republished["event"] == "republished"
    assert (republished["version"], republished["lost_versions"]) == (4, 0)
    assert (resumed.state.step, resumed.state.policy_version) == (3, 4)
    assert published_versions(weights)[-1] == 4
    buffer.put(sampled_groups(tiny_arith_model, prompts=4, seed=6, version=4))  # the v0 rest is too stale
    deadline = time.monotonic() + 120  # a buffer with nothing usable would make sample_batch wait
    resumed.run(should_stop=lambda: time.monotonic() > deadline)
    assert resumed.state.step == 4 and published_versions(weights)[-1] == 5

    # Bad groups met while sampling are skipped and counted, and the batch's counts stay consistent.
    good = sampled_groups(tiny_arith_model, prompts=1, seed=5, version=5)[0]  # fresh for a v5 learner
    single = ScoredGroup("one", good.prompt, good.prompt_token_ids, good.samples[:1], [1.0], ["ok"], [{}])
    empty = Sample(good.samples[0].prompt_id, good.prompt_token_ids, [], "", [], "stop", 5, "t")
    blank = ScoredGroup("blank", good.prompt, good.prompt_token_ids, [empty, good.samples[1]], [0.0, 1.0],
                        ["ok", "ok"], [{}, {}])  # fmt: skip
    buffer.put([single, good, blank, good])  # a full batch: the learner may wait for one
    deadline = time.monotonic() + 30
    sampled = resumed.sample_batch(should_stop=lambda: time.monotonic() > deadline)
    assert sampled is not None and [g.group_id for g in sampled.groups] == [good.group_id] * 2
    assert (sampled.num_fresh, sampled.on_policy_fraction, len(sampled.delivery_ids)) == (2, 1.0, 4)
    assert resumed.skipped == {"group_of_one": 1, "empty_completion": 1}
    buffer.ack(sampled.delivery_ids)
    strict = resumed.config.learner.model_copy(update={"bad_data": "error"})
    resumed.config = resumed.config.model_copy(update={"learner": strict})
    buffer.put([good, single, good, good])
    with pytest.raises(BadDataError, match="group 'one': group of one"):
        resumed.sample_batch(should_stop=lambda: time.monotonic() > deadline)
