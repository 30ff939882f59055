"""The eval-gated `best/` export: only a better eval of exactly a written checkpoint's weights promotes it."""

import json
from pathlib import Path

from services.orchestration.best import BestExport


def write_checkpoint(run_dir: Path, step: int, version: int) -> None:
    directory = run_dir / "checkpoints" / f"step-{step:08d}"
    (directory / "hf").mkdir(parents=True)
    (directory / "hf" / "model.safetensors").write_text(f"weights of step {step}")
    (directory / "tandem_state.json").write_text(json.dumps({"step": step, "policy_version": version}))


def best_weights(run_dir: Path) -> str:
    return (run_dir / "best" / "model.safetensors").read_text()


def test_better_evals_promote_their_checkpoint_and_worse_do_not(tmp_path: Path) -> None:
    best = BestExport(tmp_path)
    best.offer(10, 10, 0.4)
    assert best.settle() == [] and best.pending  # checkpoint not written yet: waits
    write_checkpoint(tmp_path, 10, 10)
    assert "step-00000010" in best.settle()[0] and best_weights(tmp_path) == "weights of step 10"
    write_checkpoint(tmp_path, 20, 20)
    best.offer(20, 20, 0.3)
    best.settle()
    assert best_weights(tmp_path) == "weights of step 10"
    write_checkpoint(tmp_path, 30, 30)
    best.offer(30, 30, 0.5)
    best.settle()
    assert best_weights(tmp_path) == "weights of step 30"
    record = json.loads((tmp_path / "best" / "best.json").read_text())
    assert record == {"step": 30, "policy_version": 30, "eval_reward_mean": 0.5}
    assert not (tmp_path / "best.tmp").exists() and not (tmp_path / "best.old").exists()


def test_an_eval_of_other_weights_never_qualifies(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, 10, 10)
    best = BestExport(tmp_path)
    best.offer(10, 11, 0.9)  # the actor had already moved on to v11
    assert "not checkpoint" in best.settle()[0]
    assert not (tmp_path / "best").exists()


def test_a_resumed_run_competes_against_its_earlier_best(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, 10, 10)
    first = BestExport(tmp_path)
    first.offer(10, 10, 0.6)
    first.settle()
    write_checkpoint(tmp_path, 20, 20)
    resumed = BestExport(tmp_path)
    resumed.offer(20, 20, 0.5)
    resumed.settle()
    assert best_weights(tmp_path) == "weights of step 10"
