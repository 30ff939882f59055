"""No secret leaves a run: a short real `tandem train` whose config holds a reward token, an http
scorer header and two Redis URL passwords writes none of them into any file of its run directory,
nor prints one on stdout or stderr (its own log lines and those Ray forwards from the actors)."""

import json
import os
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
TOKEN, HEADER = "secret-token-5d2f9e71", "secret-header-a83c0b44"
BUFFER_PASSWORD, PROMPT_PASSWORD = "secret-bufpw-61e0d9", "secret-prmpw-2b7a4c"


@pytest.fixture(scope="module")
def quick_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A policy vLLM and the learner load, trained for 10 steps only (seconds, not the minutes of
    models/tiny-arith): what this test checks does not depend on what the model has learnt."""
    from core.tinymodels.policy import PolicyRecipe, build_policy

    directory = tmp_path_factory.mktemp("quick") / "policy"
    build_policy("arithmetic", directory, recipe=PolicyRecipe(steps=10, n_train=64, n_eval=16))
    return directory


@pytest.fixture
def judge() -> Iterator[tuple[str, list[str]]]:
    """An http scorer endpoint (template format) that answers a random reward (so every group has a
    spread to learn from, whatever the model says) and records the Authorization headers it was sent,
    so the test can tell the header secret was really in use."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            seen.append(self.headers.get("authorization") or "")
            body = json.dumps({"reward": random.random()}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/score", seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_run_writes_and_prints_no_secret(
    quick_policy: Path, tmp_path: Path, judge: tuple[str, list[str]]
) -> None:
    judge_url, seen = judge
    run_dir = tmp_path / "run"
    scorers = (
        "[{name: exact_match, type: exact_match, pattern: '^\\s*(-?\\d+)', numeric_tolerance: 0}, "
        f"{{name: judge, type: http, url: '{judge_url}', format: template, "
        f"request_template: {{q: '{{prompt}}'}}, headers: {{Authorization: 'Bearer {HEADER}'}}}}]"
    )
    overrides = [
        f"model.path={quick_policy}",
        f"actors.train_prompts={quick_policy / 'prompts' / 'train.jsonl'}",
        f"actors.eval_prompts={quick_policy / 'prompts' / 'eval.jsonl'}",
        "actors.prompts_per_batch=8",
        "learner.max_steps=2",
        "learner.batch_groups=4",
        "learner.eval_every=2",
        "learner.checkpoint_every=2",
        "buffer.high_water=16",
        "run.max_minutes=8",
        f"reward.scorers={scorers}",
        # Unused by this memory-buffer, file-prompt run, but dumped with the config like any field.
        f"buffer.redis_url=redis://:{BUFFER_PASSWORD}@127.0.0.1:6379/0",
        f"actors.prompt_redis_url=redis://feeder:{PROMPT_PASSWORD}@127.0.0.1:6379/0",
    ]
    command = [sys.executable, "-m", "services.cli", "train", "--config", str(ROOT / "configs" / "demo.yaml")]
    command += [arg for override in overrides for arg in ("--set", override)]
    command += ["--run-dir", str(run_dir), "--no-progress"]
    # The token comes from the environment, as deployments pass it (compose, the Ray cluster file).
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")} | {
        "TANDEM_REWARD__AUTH_TOKEN": TOKEN
    }
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert f"Bearer {HEADER}" in seen  # the header secret was in use, and the judge scored items

    secrets = (TOKEN, HEADER, BUFFER_PASSWORD, PROMPT_PASSWORD)
    for secret in secrets:
        assert secret not in output, (secret, "printed")
    files = [path for path in run_dir.rglob("*") if path.is_file()]
    assert any(path.name == "config.yaml" for path in files) and any(p.name == "train.log" for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, (secret, str(path))
    config_text = (run_dir / "config.yaml").read_text()
    assert "auth_token: '***'" in config_text and ":***@127.0.0.1" in config_text
