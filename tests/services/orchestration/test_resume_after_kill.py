"""`kill -9` of `tandem train` between two checkpoints with the Redis buffer (a private redis-server),
then `tandem train --resume`: the run continues from its last checkpoint (step, policy version) and
finishes, and the experience ledger (RUN/ledger.jsonl) holds against the buffer both after the kill
and at the end: every group put is covered by the surviving checkpoint, held pending to be handed out
again, undelivered or settled as too stale; none is lost with the killed weights, none trained twice."""

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
from learner.ledger import audit, read_ledger, reconcile
from services.orchestration.run_files import read_jsonl
from tests.services.orchestration.test_train_e2e import ROOT, short_demo

sys.path.insert(0, str(ROOT / "tests" / "core" / "buffer"))
from buffer_support import PrivateRedis  # the buffer tests' redis-server helper

pytestmark = pytest.mark.slow
MAX_STEPS, EVERY = 12, 3


def train_command(run_dir: Path, model: Path, redis_url: str, namespace: str, resume: bool) -> list[str]:
    overrides = [
        *short_demo(run_dir, model, MAX_STEPS),
        "buffer.kind=redis",
        f"buffer.redis_url={redis_url}",
        f"buffer.namespace={namespace}",
        f"learner.checkpoint_every={EVERY}",
        "learner.eval_every=100",
    ]
    command = [sys.executable, "-m", "services.cli", "train", "--config", str(ROOT / "configs" / "demo.yaml")]
    command += [arg for override in overrides for arg in ("--set", override)]
    return [*command, "--no-progress", *(["--resume"] if resume else [])]


def test_a_killed_run_resumes_from_its_checkpoint_without_losing_groups(
    tiny_arith_model: Path, tmp_path: Path
) -> None:
    from core.buffer.redis_buffer import RedisBuffer

    redis_server = PrivateRedis(tmp_path)
    redis_server.start()
    run_dir, namespace = tmp_path / "run", f"resume-{uuid.uuid4().hex[:8]}"
    log = (tmp_path / "train.log").open("a")
    config = load_config(
        ROOT / "configs" / "demo.yaml",
        ["buffer.kind=redis", f"buffer.redis_url={redis_server.url}", f"buffer.namespace={namespace}"],
    )
    buffer = RedisBuffer(config.buffer, consumer="test-observer")
    try:
        first = subprocess.Popen(
            train_command(run_dir, tiny_arith_model, redis_server.url, namespace, resume=False),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT,
        )  # fmt: skip

        def between_checkpoints() -> bool:  # checkpoint 3 written and acked, two steps past it
            steps = [r["step"] for r in read_ledger(run_dir) if r["event"] == "step"]
            return (run_dir / "checkpoints" / "step-00000003" / "tandem_state.json").is_file() and max(
                steps, default=0
            ) >= EVERY + 2

        try:
            deadline = time.monotonic() + 600
            while not between_checkpoints():
                assert first.poll() is None, (tmp_path / "train.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no step 5"
                time.sleep(0.05)
        finally:
            with contextlib.suppress(ProcessLookupError):  # already gone: the assertion above says why
                os.killpg(first.pid, signal.SIGKILL)  # the driver and the learner in it, mid-step
            first.wait()
        steps_before = [row["step"] for row in read_jsonl(run_dir / "metrics.jsonl")]
        assert steps_before[-1] < MAX_STEPS

        killed = audit(run_dir)
        stats = buffer.stats()
        pending = buffer.pending_ids()
        print(f"\nkilled after step {killed.steps[-1]}: {killed.summary()}")
        print(f"buffer after the kill: {stats.as_dict()}")
        assert killed.uncovered and set(killed.uncovered) <= pending  # held for redelivery, not acked
        assert reconcile(run_dir, killed, stats, pending) == []

        resumed = subprocess.run(
            train_command(run_dir, tiny_arith_model, redis_server.url, namespace, resume=True),
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, timeout=900,
        )  # fmt: skip
        assert resumed.returncode == 0, (tmp_path / "train.log").read_text()[-3000:]

        (event,) = [e for e in read_jsonl(run_dir / "events.jsonl") if e.get("event") == "resumed"]
        checkpoint_step = event["step"]
        assert checkpoint_step == killed.checkpoint_step
        steps = [row["step"] for row in read_jsonl(run_dir / "metrics.jsonl")]
        assert steps[len(steps_before) :] == list(range(checkpoint_step + 1, MAX_STEPS + 1))

        final = audit(run_dir)
        stats = buffer.stats()
        print(f"after the resume: {final.summary()}; buffer {stats.as_dict()}")
        assert final.steps == list(range(1, MAX_STEPS + 1)) and final.checkpoint_step == MAX_STEPS
        assert (final.twice, final.lost, final.uncovered) == ([], [], [])
        assert stats.pending == 0  # the final checkpoint acked everything trained
        assert reconcile(run_dir, final, stats, buffer.pending_ids()) == []
        # The groups the kill took from the learner came back: trained again, or too stale by then.
        retrained = set(final.redelivered)
        counters = stats.counters
        assert len(retrained) + counters["stale_moved"] + counters["stale_dropped"] >= len(killed.uncovered)
    finally:
        buffer.delete_all()
        buffer.close()
        redis_server.kill()
