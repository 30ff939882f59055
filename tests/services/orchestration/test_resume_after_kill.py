"""`kill -9` of `tandem train` mid-run with the Redis buffer, then `tandem train --resume`: the run
continues from its last checkpoint (step, policy version), finishes, and every group the buffer
acknowledged as stored is accounted for: acked once after a step, or still waiting in the buffer."""

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from core.config import load_config
from services.orchestration.run_files import read_jsonl
from tests.services.orchestration.test_train_e2e import ROOT, short_demo

pytestmark = pytest.mark.slow


def train_command(run_dir: Path, model: Path, namespace: str, resume: bool) -> list[str]:
    overrides = [
        *short_demo(run_dir, model, 12),
        "buffer.kind=redis",
        f"buffer.namespace={namespace}",
        "learner.checkpoint_every=3",
        "learner.eval_every=100",
    ]
    command = [sys.executable, "-m", "services.cli", "train", "--config", str(ROOT / "configs" / "demo.yaml")]
    command += [arg for override in overrides for arg in ("--set", override)]
    return [*command, "--no-progress", *(["--resume"] if resume else [])]


def test_a_killed_run_resumes_from_its_checkpoint_without_losing_groups(
    tiny_arith_model: Path, tmp_path: Path
) -> None:
    run_dir, namespace = tmp_path / "run", f"resume-{uuid.uuid4().hex[:8]}"
    log = (tmp_path / "train.log").open("a")
    first = subprocess.Popen(
        train_command(run_dir, tiny_arith_model, namespace, resume=False),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not (run_dir / "checkpoints" / "step-00000006" / "tandem_state.json").is_file():
            assert first.poll() is None, (tmp_path / "train.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint at step 6"
            time.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):  # already gone: the assertion above says why
            os.killpg(first.pid, signal.SIGKILL)  # the driver and the learner in it, mid-step
        first.wait()
    steps_before = [row["step"] for row in read_jsonl(run_dir / "metrics.jsonl")]
    assert steps_before[-1] < 12

    resumed = subprocess.run(
        train_command(run_dir, tiny_arith_model, namespace, resume=True),
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, timeout=900,
    )  # fmt: skip
    assert resumed.returncode == 0, (tmp_path / "train.log").read_text()[-3000:]

    (event,) = [e for e in read_jsonl(run_dir / "events.jsonl") if e.get("event") == "resumed"]
    checkpoint_step = event["step"]
    assert checkpoint_step >= 6 and checkpoint_step % 3 == 0
    steps = [row["step"] for row in read_jsonl(run_dir / "metrics.jsonl")]
    after = steps[len(steps_before) :]
    assert after == list(range(checkpoint_step + 1, 13))  # continues right after the checkpoint
    print(f"\nkilled after step {steps_before[-1]}; resumed from checkpoint {checkpoint_step}")

    from core.buffer import open_buffer

    config = load_config(
        ROOT / "configs" / "demo.yaml", ["buffer.kind=redis", f"buffer.namespace={namespace}"]
    )
    buffer = open_buffer(config.buffer)
    try:
        stats = buffer.stats()
        counters = stats.counters
        print(f"buffer after resume: {stats.as_dict()}")
        accounted = counters["acked"] + stats.backlog + stats.pending
        accounted += counters["stale_moved"] + counters["stale_dropped"]
        assert counters["put"] == accounted
    finally:
        buffer.delete_all()  # type: ignore[attr-defined]
        buffer.close()
