"""Checkpoint files (learner/checkpoint.py): everything fsynced before the completion marker, a resume
that falls back to the previous checkpoint when the newest does not load, `keep_checkpoints`, and
directories without a marker (a save cut short) ignored."""

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from learner_support import learner_config
from transformers import AutoModelForCausalLM

from learner import engine as ds
from learner.checkpoint import (
    MARKER,
    LearnerState,
    complete_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)

pytestmark = pytest.mark.slow


def new_engine(model_dir: Path) -> object:
    config = learner_config(model_dir, Path("unused"))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return ds.create_engine(model, config.learner)


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_with_a_warning(
    tiny_arith_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = new_engine(tiny_arith_model)
    for step in (2, 4):
        state = LearnerState(step=step, policy_version=step, deliveries=[f"d{step}"])
        save_checkpoint(engine, state, tmp_path, tiny_arith_model)
    newest = tmp_path / "checkpoints" / "step-00000004"
    (model_states,) = newest.glob("*model_states.pt")
    model_states.write_bytes(model_states.read_bytes()[:100])  # a torn file, the marker intact

    fresh = new_engine(tiny_arith_model)
    with caplog.at_level(logging.WARNING, logger="learner.checkpoint"):
        restored = load_checkpoint(fresh, tmp_path)
    assert restored is not None
    path, state = restored
    assert path.name == "step-00000002" and (state.step, state.policy_version) == (2, 2)
    assert state.deliveries == ["d2"]
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(newest) in warning.getMessage() and "does not load" in warning.getMessage()


def test_no_loadable_checkpoint_is_an_error_not_a_fresh_start(tiny_arith_model: Path, tmp_path: Path) -> None:
    engine = new_engine(tiny_arith_model)
    save_checkpoint(engine, LearnerState(step=1), tmp_path, tiny_arith_model)
    (model_states,) = (tmp_path / "checkpoints" / "step-00000001").glob("*model_states.pt")
    model_states.write_bytes(b"")
    with pytest.raises(RuntimeError, match="no checkpoint"):
        load_checkpoint(new_engine(tiny_arith_model), tmp_path)


def test_only_keep_checkpoints_remain(tiny_arith_model: Path, tmp_path: Path) -> None:
    engine = new_engine(tiny_arith_model)
    for step in (1, 2, 3, 4):
        save_checkpoint(engine, LearnerState(step=step), tmp_path, tiny_arith_model, keep=2)
    remaining = sorted(path.name for path in (tmp_path / "checkpoints").glob("step-*"))
    assert remaining == ["step-00000003", "step-00000004"]
    assert [path.name for path in complete_checkpoints(tmp_path)] == remaining


def test_a_checkpoint_without_its_marker_is_ignored(tiny_arith_model: Path, tmp_path: Path) -> None:
    engine = new_engine(tiny_arith_model)
    for step in (1, 2):
        save_checkpoint(engine, LearnerState(step=step, policy_version=step), tmp_path, tiny_arith_model)
    (tmp_path / "checkpoints" / "step-00000002" / MARKER).unlink()  # killed before the marker
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-00000001"
    fresh = new_engine(tiny_arith_model)
    restored = load_checkpoint(fresh, tmp_path)
    assert restored is not None and restored[1].step == 1


def test_a_save_after_falling_back_replaces_the_abandoned_lineage(
    tiny_arith_model: Path, tmp_path: Path
) -> None:
    """Resumed from step 2 because step 4 did not load: the new step 3 and 4 replace the old ones, and
    the old step 4's marker never vouches for the new step 4's files while they are written."""
    engine = new_engine(tiny_arith_model)
    for step in (2, 4, 6):
        save_checkpoint(
            engine, LearnerState(step=step, policy_version=step), tmp_path, tiny_arith_model, keep=5
        )
    save_checkpoint(engine, LearnerState(step=3, policy_version=9), tmp_path, tiny_arith_model, keep=5)
    assert [path.name for path in complete_checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]
    assert not (tmp_path / "checkpoints" / "step-00000004").exists()  # its weights are of a dead lineage


def test_every_file_is_fsynced_before_the_marker_is_renamed_into_place(
    tiny_arith_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, Path.replace

    def fsync(descriptor: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    def replace(self: Path, target: Path) -> Path:
        events.append(("rename", str(target)))
        return real_replace(self, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Path, "replace", replace)
    engine = new_engine(tiny_arith_model)
    path = save_checkpoint(engine, LearnerState(step=1), tmp_path, tiny_arith_model)

    marker = str(path / MARKER)
    renamed_at = events.index(("rename", marker))
    synced_before = {name for kind, name in events[:renamed_at] if kind == "fsync"}
    files = {str(p) for p in path.rglob("*") if p.is_file() and p.name != MARKER}
    directories = {str(path), str(path / "hf"), str(tmp_path / "checkpoints")}
    assert len(files) >= 3
    assert files | directories <= synced_before, sorted((files | directories) - synced_before)
    assert str(path) + "/" + MARKER + ".partial" in synced_before  # the marker's content, before its rename
    assert ("fsync", str(path)) in events[renamed_at:]  # and the rename itself
    assert json.loads(Path(marker).read_text())["step"] == 1
