"""The experience ledger's audit (learner/ledger.py) on hand-written ledgers: the lineage across a
resume, groups trained twice or acked and lost, a torn last line, and the command-line audit."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from core.buffer.protocol import COUNTERS, BufferStats
from learner.ledger import LEDGER, audit, reconcile

ROOT = Path(__file__).resolve().parents[2]


def write(run_dir: Path, *records: dict[str, Any], checkpoints: dict[int, list[str]]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LEDGER).write_text("".join(json.dumps(r) + "\n" for r in records) + '{"event": "st')
    for step, deliveries in checkpoints.items():
        tag = run_dir / "checkpoints" / f"step-{step:08d}"
        tag.mkdir(parents=True)
        (tag / "tandem_state.json").write_text(json.dumps({"step": step, "deliveries": deliveries}))


def step(number: int, *deliveries: str) -> dict[str, Any]:
    return {"event": "step", "step": number, "deliveries": list(deliveries)}


def stats(put: int, acked: int, pending: int = 0, backlog: int = 0) -> BufferStats:
    counters = dict.fromkeys(COUNTERS, 0) | {"put": put, "acked": acked}
    return BufferStats(pending + backlog, backlog, pending, 0, 0, 0, {}, counters)


def test_a_resume_discards_the_steps_after_its_checkpoint(tmp_path: Path) -> None:
    write(
        tmp_path,
        {"event": "start", "step": 0}, step(1, "a", "b"), step(2, "c", "d"),
        {"event": "checkpoint", "step": 2, "acked": ["a", "b", "c", "d"]},
        step(3, "e", "f"),  # then killed: e and f stay pending
        {"event": "resume", "step": 2}, step(3, "e", "f"), step(4, "g", "h"),
        checkpoints={2: ["a", "b", "c", "d"]},
    )  # fmt: skip
    found = audit(tmp_path)
    assert found.steps == [1, 2, 3, 4] and found.checkpoint_step == 2 and found.resumes == 1
    assert found.covered == ["a", "b", "c", "d"] and found.uncovered == ["e", "f", "g", "h"]
    assert found.redelivered == ["e", "f"] and (found.twice, found.lost) == ([], [])
    # Killed again now: the buffer holds e-h pending; it acked a-d.
    assert reconcile(tmp_path, found, stats(8, 4, pending=4), {"e", "f", "g", "h"}) == []
    problems = reconcile(tmp_path, found, stats(8, 6, pending=2), {"g", "h"})  # e, f acked too early
    assert any("yet acked: ['e', 'f']" in problem for problem in problems)


def test_twice_and_lost_are_named(tmp_path: Path) -> None:
    write(
        tmp_path,
        {"event": "start", "step": 0}, step(1, "a"), step(2, "a"),
        {"event": "checkpoint", "step": 2, "acked": ["a", "z"]},
        checkpoints={2: ["a"]},
    )  # fmt: skip
    found = audit(tmp_path)
    assert (found.twice, found.lost) == (["a"], ["z"])
    result = subprocess.run(
        [sys.executable, "-m", "learner.ledger", str(tmp_path), "--no-buffer"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["ledger"]["twice"] == ["a"]
