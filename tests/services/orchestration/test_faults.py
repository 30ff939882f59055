"""Faults a long run must survive, on the real loop (vLLM actor under Ray, DeepSpeed learner):
a generator actor killed mid-run, and the reward server killed and restarted mid-run."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import ray

from actors.dead_letter import read_dead_letters
from core.config import load_config
from services.embedded_server import free_port
from services.orchestration.run_files import read_jsonl
from tests.services.orchestration.test_train_e2e import ROOT, short_demo

pytestmark = pytest.mark.slow


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)


class TrainInThread:
    """`train()` on a thread, so the test can break things while it runs."""

    def __init__(self, config) -> None:  # type: ignore[no-untyped-def]
        from services.orchestration.driver import train

        self.result = None
        self.error: BaseException | None = None

        def target() -> None:
            try:
                self.result = train(config, progress=False)
            except BaseException as error:
                self.error = error

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def join(self, timeout_s: float):  # type: ignore[no-untyped-def]
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the run did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def steps_done(run_dir: Path) -> int:
    return len(read_jsonl(run_dir / "metrics.jsonl"))


def test_a_killed_generator_actor_comes_back_on_the_latest_weights(
    tiny_arith_model: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    overrides = [
        *short_demo(run_dir, tiny_arith_model, 30),
        "learner.eval_every=100",
        "learner.checkpoint_every=100",
    ]
    config = load_config(ROOT / "configs" / "demo.yaml", overrides)
    try:
        run = TrainInThread(config)
        wait_for(lambda: steps_done(run_dir) >= 5 or not run.thread.is_alive(), 300, "five learner steps")
        version_at_kill = read_jsonl(run_dir / "metrics.jsonl")[-1]["policy_version"]
        ray.kill(ray.get_actor("demo-actor-0", namespace="tandem"), no_restart=False)
        result = run.join(600)
    finally:
        ray.shutdown()
    assert result.steps == 30
    messages = [e["message"] for e in read_jsonl(run_dir / "events.jsonl") if e.get("event") == "actor"]
    assert any("died" in m for m in messages), messages
    back = [m for m in messages if "is back on weights" in m]
    assert back, messages
    version_back = int(back[0].split("weights v")[1].split(";")[0])
    assert version_back >= version_at_kill  # caught up before generating again
    print(f"\nkilled at v{version_at_kill}; back on v{version_back}; events: {messages}")


def start_reward_server(port: int, log: Path) -> subprocess.Popen:
    config = ROOT / "configs" / "demo.yaml"
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "reward-server", "--config", str(config), "--port", str(port)],
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_for(lambda: _ready(port) or process.poll() is not None, 120, "the reward server")
    assert process.poll() is None, log.read_text()[-2000:]
    return process


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_reward_server_restart_costs_retries_not_silent_zeros(
    tiny_arith_model: Path, tmp_path: Path
) -> None:
    run_dir, port = tmp_path / "run", free_port()
    overrides = [
        *short_demo(run_dir, tiny_arith_model, 40),
        f"reward.url=http://127.0.0.1:{port}",
        "reward.client_timeout_s=5",
        "reward.client_retries=2",
        "actors.reward_item_retries=1",
        "learner.eval_every=100",
        "learner.checkpoint_every=100",
    ]
    config = load_config(ROOT / "configs" / "demo.yaml", overrides)
    server = start_reward_server(port, tmp_path / "reward.log")
    try:
        run = TrainInThread(config)
        wait_for(lambda: steps_done(run_dir) >= 5 or not run.thread.is_alive(), 300, "five learner steps")
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        time.sleep(8)  # long enough for some reward calls to exhaust their retries
        server = start_reward_server(port, tmp_path / "reward.log")
        result = run.join(600)
    finally:
        ray.shutdown()
        os.killpg(server.pid, signal.SIGKILL)
    assert result.steps == 40
    (actor,) = json.loads((run_dir / "actors.json").read_text())
    print(f"\nreward outage: actor stats {actor}")
    # The batch in flight during the outage was held and scored once the server was back.
    assert actor["outage_waits"] > 0 and actor["reward_client"]["retries"] > 0
    assert actor["groups_dead_lettered"] == 0 and not read_dead_letters(run_dir / "dead_letter")
    # Every trained group was really scored: the learner saw only finite rewards from the server.
    assert all(row["reward_mean"] is not None for row in read_jsonl(run_dir / "metrics.jsonl"))
