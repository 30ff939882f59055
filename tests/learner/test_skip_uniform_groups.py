"""`buffer.skip_uniform_groups`: a group whose rewards are all equal is set aside and counted as
`uniform_rewards` (never an error, even with `learner.bad_data: error`), bad data is still judged
first, and the real learner step trains only on the groups left (and counts the others)."""

from pathlib import Path

import msgspec
import pytest
import torch
from test_single_pass_microbatch import mixed_groups, tiny_policy

from core.buffer import MemoryBuffer
from core.config import load_config
from core.config.buffer import BufferConfig
from core.schemas import Sample, ScoredGroup
from core.weight_sync.filesystem import FilesystemPublisher
from learner.run import Learner
from learner.step import BadDataError, screen_groups


def group(name: str, rewards: list[float | None], completion: list[int] | None = None) -> ScoredGroup:
    sample = Sample(name, [1, 2], [3, 4] if completion is None else completion, "x", None, "stop", 0, "a")
    statuses = ["ok" if reward is not None else "error" for reward in rewards]
    return ScoredGroup(name, "p", [1, 2], [sample] * len(rewards), rewards, statuses, [{}] * len(rewards))


def test_uniform_groups_are_kept_unless_asked_and_then_counted() -> None:
    mixed, right, wrong = group("m", [1.0, 0.0, 1.0]), group("r", [1.0] * 3), group("w", [0.0, 0.0])
    assert BufferConfig().skip_uniform_groups is False
    kept, skipped = screen_groups([mixed, right, wrong], stop_on_bad_data=False)
    assert kept == [mixed, right, wrong] and not skipped

    kept, skipped = screen_groups([mixed, right, wrong], stop_on_bad_data=False, skip_uniform_rewards=True)
    assert kept == [mixed] and skipped == {"uniform_rewards": 2}

    # Not bad data: `learner.bad_data: error` still skips it rather than stopping the run.
    kept, skipped = screen_groups([right, mixed], stop_on_bad_data=True, skip_uniform_rewards=True)
    assert kept == [mixed] and skipped == {"uniform_rewards": 1}


def test_bad_data_is_judged_before_uniformity() -> None:
    unscored = group("u", [None, None])  # "uniform" too, but unscored is the reason that counts
    empty = group("e", [1.0, 1.0], completion=[])
    kept, skipped = screen_groups([unscored, empty], stop_on_bad_data=False, skip_uniform_rewards=True)
    assert kept == [] and skipped == {"unscored_or_nonfinite_reward": 1, "empty_completion": 1}
    with pytest.raises(BadDataError, match="group 'e': empty completion"):
        screen_groups([empty], stop_on_bad_data=True, skip_uniform_rewards=True)


def test_the_learner_step_trains_only_on_groups_with_a_reward_signal(tmp_path: Path) -> None:
    """The real learner (DeepSpeed engine, reference model, buffer, publisher) on a tiny random Qwen2:
    a batch of 3 groups with mixed rewards and 3 whose rewards are all 1 or all 0. With the setting
    off, the step trains on all 6; on, its loss sees the 3 mixed groups only, the record counts the
    others as `uniform_rewards`, and the weights move differently (the step's gradient differs)."""
    model_dir = tmp_path / "model"
    tiny_policy(torch.float32).save_pretrained(model_dir)
    mixed = mixed_groups()[:3]
    uniform = [
        msgspec.structs.replace(g, group_id=f"u-{g.group_id}", rewards=[float(index % 2)] * len(g.rewards))
        for index, g in enumerate(mixed_groups(seed=1)[3:6])
    ]
    assert all(len(set(g.rewards)) > 1 for g in mixed)
    batch = [mixed[0], uniform[0], mixed[1], uniform[1], uniform[2], mixed[2]]
    moved = {}
    for skip in (False, True):
        config = load_config(
            None,
            [f"model.path={model_dir}", f"run.run_dir={tmp_path / f'run-{skip}'}", "learner.max_steps=1",
             "learner.batch_groups=6", "learner.lr=1e-2", "buffer.on_policy_fraction=1.0",
             "buffer.replay_capacity=0", f"buffer.skip_uniform_groups={str(skip).lower()}"],
            environ={},
        )  # fmt: skip
        buffer = MemoryBuffer(config.buffer)
        buffer.put(batch)
        records: list[dict] = []
        publisher = FilesystemPublisher(tmp_path / f"weights-{skip}", keep_versions=2)
        learner = Learner(config, buffer, publisher, sink=records.append)
        learner.run()
        (record,) = [r for r in records if "loss" in r]
        trained = mixed if skip else batch
        assert record["num_groups"] == len(trained)
        assert record["num_samples"] == sum(len(g.samples) for g in trained)
        rewards = [r for g in trained for r in g.rewards]
        assert record["reward_mean"] == pytest.approx(sum(rewards) / len(rewards))  # type: ignore[arg-type]
        assert record["skipped"] == ({"uniform_rewards": 3} if skip else {})
        assert record["grad_norm"] > 0
        assert (
            buffer.stats().backlog == 0
        )  # the skipped groups are settled with the step, not handed out again
        moved[skip] = torch.cat([p.detach().flatten() for p in learner.engine.module.parameters()])
    assert not torch.equal(moved[False], moved[True])
