"""`tandem learn` as a real process against a private redis-server: killed with SIGKILL after its first
checkpoint and started again with --resume, it continues from that checkpoint (step, policy version,
optimizer state) and every group the buffer accepted is trained or still held, none lost."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from learner_support import sampled_groups
from transformers import AutoModelForCausalLM

from core.buffer.redis_buffer import RedisBuffer
from core.config import load_config
from core.weight_sync.filesystem import published_versions
from learner import engine as ds
from learner.checkpoint import latest_checkpoint, load_checkpoint
from services.orchestration.run_files import read_jsonl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services" / "buffer"))
from buffer_support import PrivateRedis  # the buffer tests' redis-server helper

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
GROUPS, BATCH, MAX_STEPS = 24, 2, 12
DISTRIBUTED_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout_s} s")
        time.sleep(0.05)


def start_learner(config_file: Path, log: Path, resume: bool) -> subprocess.Popen:
    command = [sys.executable, "-m", "services.cli", "learn", "--config", str(config_file)]
    # Not this process's torch.distributed rendezvous (a learner joins the group its environment names).
    env = {key: value for key, value in os.environ.items() if key not in DISTRIBUTED_ENV}
    return subprocess.Popen(
        command + (["--resume"] if resume else []),
        cwd=ROOT, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def saved_optimizer_state(checkpoint: Path) -> dict:
    """The ZeRO optimizer state file DeepSpeed wrote, loaded with torch's restricted unpickler."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    (path,) = checkpoint.glob("*optim_states.pt")
    with torch.serialization.safe_globals([LossScaler, ZeroStageEnum, fragment_address]):
        return torch.load(path, weights_only=True)["optimizer_state_dict"]


def tensors(value: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a nested dict/list, by its path."""
    if isinstance(value, torch.Tensor):
        return {prefix: value}
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return {path: t for key, item in items for path, t in tensors(item, f"{prefix}/{key}").items()}


def test_a_killed_learner_resumes_from_its_checkpoint_and_loses_no_group(
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
            "batch_groups": BATCH, "max_steps": MAX_STEPS, "checkpoint_every": 2, "sync_every": 1, "lr": 1e-3,
        },
        "weight_sync": {"transport": "filesystem", "directory": str(weights), "keep_versions": 100},
        "logging": {"tensorboard": False},
    }  # fmt: skip
    config_file = tmp_path / "learner.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    config = load_config(config_file, [], environ={})
    actors = RedisBuffer(config.buffer, consumer="actors")
    actors.put(sampled_groups(tiny_arith_model, prompts=GROUPS, seed=7))
    log = tmp_path / "learner.log"
    processes: list[subprocess.Popen] = []
    try:
        first = start_learner(config_file, log, resume=False)
        processes.append(first)

        # Step 3 reported: the step-2 checkpoint is written and the learner is into step 4 (sampled,
        # not yet acked) or about to be; v3 is published, after the checkpoint.
        def reported() -> int:
            return len(read_jsonl(run_dir / "metrics.jsonl"))

        wait_for(lambda: reported() >= 3 or first.poll() is not None, 300, "three learner steps")
        assert first.poll() is None, log.read_text()[-3000:]
        os.kill(first.pid, signal.SIGKILL)  # mid-run: no ack, checkpoint or clean-up gets to finish
        first.wait()

        checkpoint = latest_checkpoint(run_dir)
        assert checkpoint is not None
        saved = json.loads((checkpoint / "tandem_state.json").read_text())
        step, version = saved["step"], saved["policy_version"]
        steps_before = read_jsonl(run_dir / "metrics.jsonl")
        published_before = max(published_versions(weights))
        stats = actors.stats()
        acked = stats.counters["acked"]
        print(
            f"\nkilled after step {steps_before[-1]['step']} (checkpoint {checkpoint.name}, v{version}; "
            f"v{published_before} published, v{stats.learner_version} announced); buffer: {acked} acked, "
            f"{stats.pending} pending, "
            f"{stats.backlog} undelivered of {stats.counters['put']}"
        )
        assert stats.counters["put"] == GROUPS and acked + stats.pending + stats.backlog == GROUPS
        assert BATCH * step <= acked and BATCH * len(steps_before) <= acked

        # What the checkpoint restores into a fresh engine: its step, version and optimizer state.
        model = AutoModelForCausalLM.from_pretrained(tiny_arith_model, dtype=torch.float32)
        engine = ds.create_engine(model, config.learner)
        restored = load_checkpoint(engine, run_dir)
        assert restored is not None and restored[0] == checkpoint
        assert (restored[1].step, restored[1].policy_version) == (step, version)
        expected, loaded = tensors(saved_optimizer_state(checkpoint)), tensors(engine.optimizer.state_dict())
        assert expected.keys() == loaded.keys() and len(expected) >= 3  # Adam moments, step, fp32 master
        differing = [path for path in expected if not torch.equal(expected[path], loaded[path])]
        assert not differing, differing
        assert ds.optimizer_steps(engine) == step

        # The groups of the steps lost with the process were trained by weights that are gone; top up
        # by as many so the resumed learner can reach max_steps, then restart it.
        extra = acked - BATCH * step
        if extra:
            actors.put(sampled_groups(tiny_arith_model, prompts=extra, seed=8, prefix="extra"))
        second = start_learner(config_file, log, resume=True)
        processes.append(second)
        assert second.wait(timeout=400) == 0, log.read_text()[-3000:]

        events = read_jsonl(run_dir / "events.jsonl")
        resumed = [e for e in events if e["event"] == "resumed"]
        assert len(resumed) == 1 and (resumed[0]["step"], resumed[0]["policy_version"]) == (step, version)
        assert resumed[0]["optimizer_steps"] == step and resumed[0]["checkpoint"] == str(checkpoint)
        republished = [e for e in events if e["event"] == "republished"]
        assert len(republished) == 1  # the restored weights, under a number never announced before
        # The buffer is told a version before its weights go out, so it is never behind what was published.
        assert stats.learner_version >= published_before
        assert republished[0]["lost_versions"] == stats.learner_version - version
        assert republished[0]["version"] == stats.learner_version + 1
        after = read_jsonl(run_dir / "metrics.jsonl")[len(steps_before) :]
        assert [row["step"] for row in after] == list(range(step + 1, MAX_STEPS + 1))
        versions = [row["policy_version"] for row in after]
        assert versions == sorted(set(versions)) and versions[0] > published_before
        assert latest_checkpoint(run_dir) == run_dir / "checkpoints" / f"step-{MAX_STEPS:08d}"

        final = actors.stats()
        print(
            f"after resume: {final.counters['acked']} acked of {final.counters['put']}; versions {versions}"
        )
        assert final.counters["put"] == GROUPS + extra == final.counters["acked"]
        assert (final.pending, final.backlog) == (0, 0)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        redis_server.kill()
