"""`tandem learn` as a real process against a private redis-server, killed with SIGKILL at several
points between and around checkpoints and started again with --resume each time. Every time, the
experience ledger and the buffer agree: every group put is covered by the surviving checkpoint, held
pending to be handed out again, or still undelivered; nothing trained after the checkpoint was
acknowledged (it would be lost with the weights that learned from it); and in the end every group is
in the final weights exactly once."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from learner_support import sampled_groups

from core.buffer.redis_buffer import CONSUMER_GROUP, RedisBuffer
from core.config import load_config
from learner.checkpoint import MARKER, complete_checkpoints, latest_checkpoint
from learner.ledger import audit, read_ledger, reconcile
from services.orchestration.run_files import read_jsonl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core" / "buffer"))
from buffer_support import PrivateRedis  # the buffer tests' redis-server helper

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
BATCH, MAX_STEPS, EVERY = 2, 12, 3
GROUPS = BATCH * MAX_STEPS  # exactly enough: a group lost in a crash would leave the learner waiting
DISTRIBUTED_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.poll() is None, f"the learner exited ({process.returncode}) before {what}"
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout_s} s")
        time.sleep(0.02)


def start_learner(config_file: Path, log: Path, resume: bool) -> subprocess.Popen:
    command = [sys.executable, "-m", "services.cli", "learn", "--config", str(config_file)]
    # Not this process's torch.distributed rendezvous (a learner joins the group its environment names).
    env = {key: value for key, value in os.environ.items() if key not in DISTRIBUTED_ENV}
    return subprocess.Popen(
        command + (["--resume"] if resume else []),
        cwd=ROOT, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def steps_since(run_dir: Path, first_line: int) -> list[int]:
    return [r["step"] for r in read_ledger(run_dir)[first_line:] if r["event"] == "step"]


def pending_ids(client: redis.Redis, key: str) -> set[str]:
    """Read straight from Redis, not through the code under test."""
    entries = client.xpending_range(key, CONSUMER_GROUP, min="-", max="+", count=100_000)
    return {entry["message_id"].decode() for entry in entries}


def check_after_kill(run_dir: Path, buffer: RedisBuffer, client: redis.Redis) -> dict[str, Any]:
    """The ledger against the buffer right after a kill: returns what was found, for the log."""
    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint is not None
    saved = json.loads((checkpoint / MARKER).read_text())
    found = audit(run_dir)
    assert found.checkpoint_step == saved["step"]
    stats = buffer.stats()
    counters = stats.counters
    pending = pending_ids(client, buffer.keys["fresh"])
    assert len(pending) == stats.pending
    # Trained after the surviving checkpoint: never acked, so handed out again after --resume (acked
    # right after each step, they would be lost with the weights that learned from them).
    assert set(found.uncovered) <= pending, sorted(set(found.uncovered) - pending)
    # Covered yet still pending only in the window between the checkpoint and its ack: the resumed
    # learner acks exactly those (they are in the checkpoint's marker).
    assert set(found.covered) & pending <= set(saved["deliveries"])
    assert (found.twice, found.lost) == ([], [])
    assert counters["acked"] == len(set(found.covered) - pending) + len(found.unusable)
    assert counters["put"] == (
        counters["acked"]
        + stats.pending
        + stats.backlog
        + counters["stale_moved"]
        + counters["stale_dropped"]
    )
    assert reconcile(run_dir, found, stats, pending) == []  # what a user's audit would say
    return {
        "checkpoint": checkpoint.name, "last_step": found.steps[-1], "covered": len(found.covered),
        "held": len(found.uncovered), "in_window": len(set(found.covered) & pending),
        "pending": stats.pending, "backlog": stats.backlog,
    }  # fmt: skip


def test_a_learner_killed_anywhere_loses_no_group_and_trains_none_twice(
    tiny_arith_model: Path, tmp_path: Path
) -> None:
    redis_server = PrivateRedis(tmp_path)
    redis_server.start()
    run_dir, weights = tmp_path / "run", tmp_path / "weights"
    settings = {
        "model": {"path": str(tiny_arith_model)},
        "run": {"run_dir": str(run_dir)},
        "buffer": {
            "kind": "redis", "redis_url": redis_server.url, "namespace": "crash", "on_policy_fraction": 1.0,
            "replay_capacity": 0, "max_staleness": 1000, "high_water": 64,
        },
        "learner": {
            "batch_groups": BATCH, "max_steps": MAX_STEPS, "checkpoint_every": EVERY, "sync_every": 1,
            "lr": 1e-3, "keep_checkpoints": 2,
        },
        "weight_sync": {"transport": "filesystem", "directory": str(weights), "keep_versions": 100},
        "logging": {"tensorboard": False},
    }  # fmt: skip
    config_file = tmp_path / "learner.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    config = load_config(config_file, [], environ={})
    actors = RedisBuffer(config.buffer, consumer="actors")
    actors.put(sampled_groups(tiny_arith_model, prompts=GROUPS, seed=7))
    client = redis.Redis.from_url(redis_server.url)
    log = tmp_path / "learner.log"
    processes: list[subprocess.Popen] = []

    def marker_of(step: int) -> Callable[[], bool]:
        return lambda: (run_dir / "checkpoints" / f"step-{step:08d}" / MARKER).is_file()

    # Where each life is killed: one step past a checkpoint; the moment a checkpoint is complete (at or
    # around its ack); two steps past one. Each life resumes from the checkpoint the last one left.
    kills: list[tuple[str, Callable[[int], Callable[[], bool]]]] = [
        ("step 4 trained", lambda first: lambda: max(steps_since(run_dir, first), default=0) >= 4),
        ("checkpoint 6 complete", lambda first: marker_of(6)),
        ("step 8 trained", lambda first: lambda: max(steps_since(run_dir, first), default=0) >= 8),
    ]
    try:
        for life, (what, condition) in enumerate(kills):
            first_line = len(read_ledger(run_dir))
            process = start_learner(config_file, log, resume=life > 0)
            processes.append(process)
            wait_for(condition(first_line), 400, what, process)
            os.kill(process.pid, signal.SIGKILL)  # no ack, checkpoint or clean-up gets to finish
            process.wait()
            found = check_after_kill(run_dir, actors, client)
            print(f"\nkilled at {what}: {found}")

        last = start_learner(config_file, log, resume=True)
        processes.append(last)
        # Had the kills lost a group, GROUPS would not reach MAX_STEPS and the learner would wait.
        assert last.wait(timeout=400) == 0, log.read_text()[-3000:]

        final = audit(run_dir)
        stats = actors.stats()
        print(f"after the last resume: {final.summary()}; buffer {stats.as_dict()}")
        assert final.steps == list(range(1, MAX_STEPS + 1)) and final.resumes == len(kills)
        assert final.checkpoint_step == MAX_STEPS and final.uncovered == []
        assert (final.twice, final.lost, final.unusable) == ([], [], [])
        assert reconcile(run_dir, final, stats, pending_ids(client, actors.keys["fresh"])) == []
        assert len(final.covered) == len(set(final.covered)) == GROUPS == stats.counters["put"]
        assert stats.counters["acked"] == GROUPS and (stats.pending, stats.backlog) == (0, 0)
        handed_back = sum(r["redelivered"] for r in read_ledger(run_dir) if r["event"] == "resume")
        assert stats.counters["redelivered"] == handed_back >= len(final.redelivered) > 0  # kills cost steps
        assert [path.name for path in complete_checkpoints(run_dir)] == [
            f"step-{step:08d}" for step in (MAX_STEPS - EVERY, MAX_STEPS)
        ]  # learner.keep_checkpoints=2

        events = read_jsonl(run_dir / "events.jsonl")
        resumed = [e for e in events if e["event"] == "resumed"]
        assert len(resumed) == len(kills)
        assert [e["optimizer_steps"] for e in resumed] == [e["step"] for e in resumed]  # optimizer restored
        after_last = read_jsonl(run_dir / "metrics.jsonl")
        versions = [row["policy_version"] for row in after_last[-(MAX_STEPS - resumed[-1]["step"]) :]]
        assert versions == sorted(set(versions))  # never a version number twice
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        redis_server.kill()
