"""Acks wait for checkpoints (learner/run.py): the groups a step trained on are acknowledged to the
buffer only once a checkpoint holds that step, so a learner that dies between checkpoints gets them
back and trains them once into the weights that survive; a learner that dies after a checkpoint but
before its ack acks them on resume instead of training them twice. The ledger (RUN/ledger.jsonl)
shows both. In-process learners on the memory buffer; a crash is an exception out of `run`."""

from pathlib import Path
from typing import Any

import pytest
from learner_support import learner_config, sampled_groups

from core.buffer import MemoryBuffer
from core.config import TandemConfig
from core.weight_sync.filesystem import FilesystemPublisher
from learner.checkpoint import latest_checkpoint
from learner.ledger import audit, read_ledger
from learner.run import Learner

pytestmark = pytest.mark.slow
BATCH = 2


class Crash(Exception):
    """Stands for a kill -9: nothing after the point it is raised at runs."""


class CrashOnAck:
    """The buffer, except that the `crash_on`-th non-empty ack raises before it reaches the buffer."""

    def __init__(self, inner: MemoryBuffer, crash_on: int):
        self.inner, self.crash_on, self.calls = inner, crash_on, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def ack(self, delivery_ids: list[str]) -> int:
        if delivery_ids:
            self.calls += 1
            if self.calls == self.crash_on:
                raise Crash(f"killed before ack {self.calls}")
        return self.inner.ack(delivery_ids)


def setup(
    model: Path, run_dir: Path, max_steps: int, checkpoint_every: int
) -> tuple[TandemConfig, MemoryBuffer]:
    config = learner_config(
        model, run_dir, f"learner.max_steps={max_steps}", f"learner.checkpoint_every={checkpoint_every}",
        f"learner.batch_groups={BATCH}", "buffer.replay_capacity=0", "buffer.max_staleness=100",
    )  # fmt: skip
    buffer = MemoryBuffer(config.buffer)
    buffer.put(sampled_groups(model, prompts=BATCH * max_steps, seed=3))
    return config, buffer


def publisher(tmp_path: Path) -> FilesystemPublisher:
    return FilesystemPublisher(tmp_path / "weights", keep_versions=100)


def steps_of(run_dir: Path) -> list[dict[str, Any]]:
    return [record for record in read_ledger(run_dir) if record["event"] == "step"]


def test_groups_are_acked_only_once_a_checkpoint_holds_them(tiny_arith_model: Path, tmp_path: Path) -> None:
    config, buffer = setup(tiny_arith_model, tmp_path / "run", max_steps=5, checkpoint_every=3)
    seen: list[tuple[int, int, int]] = []

    def sink(record: dict[str, Any]) -> None:
        if "event" not in record:  # a step's metrics: reported after the step, before its checkpoint
            stats = buffer.stats()
            seen.append((record["step"], stats.counters["acked"], stats.pending))

    Learner(config, buffer, publisher(tmp_path), sink).run()
    # Nothing acked before the step-3 checkpoint; steps 4-5 pending until the final one.
    assert seen == [(1, 0, 2), (2, 0, 4), (3, 0, 6), (4, 6, 2), (5, 6, 4)]
    stats = buffer.stats()
    assert (stats.counters["acked"], stats.pending, stats.backlog) == (10, 0, 0)
    checkpoints = [r for r in read_ledger(tmp_path / "run") if r["event"] == "checkpoint"]
    assert [(r["step"], r["newly_acked"]) for r in checkpoints] == [(3, 6), (5, 4)]
    found = audit(tmp_path / "run")
    assert (len(found.covered), found.twice, found.lost, found.uncovered) == (10, [], [], [])


def test_a_learner_killed_between_checkpoints_gets_its_unsaved_groups_back(
    tiny_arith_model: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    config, buffer = setup(tiny_arith_model, run_dir, max_steps=6, checkpoint_every=2)

    def dies_after_step_3(record: dict[str, Any]) -> None:
        if record.get("step") == 3 and "loss" in record:
            raise Crash("killed after step 3")

    with pytest.raises(Crash):
        Learner(config, buffer, publisher(tmp_path), dies_after_step_3).run()
    lost_step = steps_of(run_dir)[-1]
    assert lost_step["step"] == 3
    stats = buffer.stats()
    # The step-2 checkpoint covers 4 groups: acked. Step 3's weights died: its groups stay pending.
    assert (stats.counters["acked"], stats.pending) == (4, 2)
    before = audit(run_dir)
    assert before.checkpoint_step == 2 and before.uncovered == lost_step["deliveries"]

    resumed = Learner(config, buffer, publisher(tmp_path), resume=True)
    assert resumed.state.step == 2
    resumed.run()
    after = audit(run_dir)
    assert after.steps == [1, 2, 3, 4, 5, 6] and after.resumes == 1
    assert after.redelivered == sorted(lost_step["deliveries"])  # trained again, now into kept weights
    assert (after.twice, after.lost, after.uncovered) == ([], [], [])
    put = buffer.stats().counters["put"]
    assert len(after.covered) == put == len(set(after.covered))  # every group trained exactly once
    final = buffer.stats()
    assert (final.counters["acked"], final.pending, final.backlog, final.counters["redelivered"]) == (
        put,
        0,
        0,
        2,
    )


def test_a_learner_killed_between_its_checkpoint_and_the_ack_does_not_train_twice(
    tiny_arith_model: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    config, buffer = setup(tiny_arith_model, run_dir, max_steps=6, checkpoint_every=2)
    with pytest.raises(Crash):
        Learner(config, CrashOnAck(buffer, crash_on=2), publisher(tmp_path)).run()  # type: ignore[arg-type]
    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint is not None and checkpoint.name == "step-00000004"  # written; its ack never was
    assert (buffer.stats().counters["acked"], buffer.stats().pending) == (4, 4)

    records: list[dict[str, Any]] = []
    resumed = Learner(config, buffer, publisher(tmp_path), records.append, resume=True)
    assert [r["reacked"] for r in records if r.get("event") == "resumed"] == [4]
    assert buffer.stats().pending == 0  # nothing for `recover` to hand out again
    resumed.run()
    after = audit(run_dir)
    assert after.steps == [1, 2, 3, 4, 5, 6] and (after.twice, after.lost, after.redelivered) == ([], [], [])
    put = buffer.stats().counters["put"]
    assert len(after.covered) == put == len(set(after.covered))
    final = buffer.stats()
    assert (final.counters["acked"], final.pending, final.backlog, final.counters["redelivered"]) == (
        put,
        0,
        0,
        0,
    )
