"""Bad input fails fast: `tandem train` and `tandem learn` check every file, model folder and server a
run needs before anything heavy starts, and report the first problem as one line naming the config
key and the file (exit code 2, no traceback, no torch/Ray/vLLM/DeepSpeed imported, no run log)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from core.config import load_config
from services.orchestration.preflight import PreflightError, check_redis, preflight_learn, preflight_train

ROOT = Path(__file__).resolve().parents[3]
HEAVY = ("torch", "ray", "vllm", "deepspeed", "transformers")
# `python -m services.cli ARGS`, reporting afterwards which heavy libraries the process imported.
RUNNER = f"""
import runpy, sys
sys.argv = ["tandem", *sys.argv[1:]]
try:
    runpy.run_module("services.cli", run_name="__main__", alter_sys=True)
finally:
    print("heavy imports:", [name for name in {HEAVY!r} if name in sys.modules])
"""


def write_model(directory: Path, tokenizer: bool = True) -> Path:
    """A folder that looks like a Hugging Face model to the checks (they read no weights)."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (directory / "model.safetensors").write_bytes(b"")
    if tokenizer:
        (directory / "tokenizer.json").write_text("{}")
    return directory


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


@pytest.fixture
def setup(tmp_path: Path) -> dict:
    """A valid run setup: config file, model, prompt files; cases break one thing each."""
    model = write_model(tmp_path / "model")
    prompts = [
        json.dumps({"prompt": "1+1=", "reference": "2"}),
        json.dumps({"prompt": "2+2=", "reference": "4"}),
    ]
    train = write_lines(tmp_path / "train.jsonl", prompts)
    evals = write_lines(tmp_path / "eval.jsonl", prompts)
    run_dir = tmp_path / "run"
    config = tmp_path / "run.yaml"
    tree = {
        "run": {"run_dir": str(run_dir)},
        "model": {"path": str(model)},
        "actors": {"train_prompts": str(train), "eval_prompts": str(evals)},
        "buffer": {"kind": "memory"},
    }
    config.write_text(yaml.safe_dump(tree))
    return {"tmp": tmp_path, "config": config, "run_dir": run_dir, "model": model}


def tandem(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
    )
    return result, time.monotonic() - started


def assert_fails_fast(
    result: subprocess.CompletedProcess[str], elapsed: float, run_dir: Path, expected: list[str]
) -> str:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-3000:]
    assert result.returncode == 2, output[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # one line, naming the problem
    line = lines[0]
    assert line.startswith("tandem: ")
    for fragment in expected:
        assert fragment in line, (fragment, line)
    assert "heavy imports: []" in result.stdout, (
        result.stdout
    )  # nothing heavy was imported, let alone started
    assert not (run_dir / "train.log").exists() and not (run_dir / "learner.log").exists()
    assert elapsed < 20, elapsed
    return line


# Each case breaks one input and returns (extra arguments, fragments the one error line must hold).
Case = Callable[[dict], tuple[list[str], list[str]]]


def bad_train_prompt(s: dict) -> tuple[list[str], list[str]]:
    path = write_lines(s["tmp"] / "bad.jsonl", ['{"prompt": 5}'])
    return ["--set", f"actors.train_prompts={path}"], ["actors.train_prompts", f"{path}:1", "'prompt'"]


def bad_json_on_a_later_line(s: dict) -> tuple[list[str], list[str]]:
    path = write_lines(s["tmp"] / "late.jsonl", ['{"prompt": "1+1="}', "", '{"prompt": "2+2="'])
    return ["--set", f"actors.train_prompts={path}"], [f"{path}:3", "not valid JSON"]


def bad_eval_prompt(s: dict) -> tuple[list[str], list[str]]:
    path = write_lines(s["tmp"] / "eval-bad.jsonl", ['{"prompt": "1+1="}', '{"prompt": "x", "answer": "y"}'])
    return ["--set", f"actors.eval_prompts={path}"], ["actors.eval_prompts", f"{path}:2", "unknown field"]


def missing_train_prompts(s: dict) -> tuple[list[str], list[str]]:
    path = s["tmp"] / "nowhere.jsonl"
    return ["--set", f"actors.train_prompts={path}"], ["actors.train_prompts", str(path), "not found"]


def fewer_prompts_than_actors(s: dict) -> tuple[list[str], list[str]]:
    return ["--set", "actors.num_actors=3"], ["actors.train_prompts", "2 prompt(s)", "3 actors"]


def missing_model(s: dict) -> tuple[list[str], list[str]]:
    path = s["tmp"] / "no-model"
    return ["--set", f"model.path={path}"], ["model.path", str(path), "not found"]


def model_without_config(s: dict) -> tuple[list[str], list[str]]:
    (s["model"] / "config.json").unlink()
    return [], ["model.path", "config.json"]


def model_without_tokenizer(s: dict) -> tuple[list[str], list[str]]:
    (s["model"] / "tokenizer.json").unlink()
    return [], ["model.path", "tokenizer"]


def model_without_weights(s: dict) -> tuple[list[str], list[str]]:
    (s["model"] / "model.safetensors").unlink()
    return [], ["model.path", "weights"]


def missing_reference(s: dict) -> tuple[list[str], list[str]]:
    path = s["tmp"] / "no-reference"
    return ["--set", f"model.ref_path={path}"], ["model.ref_path", str(path)]


def reward_model_without_tokenizer(s: dict) -> tuple[list[str], list[str]]:
    path = write_model(s["tmp"] / "rm", tokenizer=False)
    scorers = f"[{{name: rm, type: reward_model, path: '{path}'}}]"
    return ["--set", f"reward.scorers={scorers}"], ["reward.scorers.0.path (rm)", "tokenizer"]


def missing_entailment_model(s: dict) -> tuple[list[str], list[str]]:
    path = s["tmp"] / "nli"
    scorers = f"[{{name: em, type: exact_match}}, {{name: nli, type: entailment, path: '{path}'}}]"
    return ["--set", f"reward.scorers={scorers}"], ["reward.scorers.1.path (nli)", "not found"]


def bad_offline_line(s: dict) -> tuple[list[str], list[str]]:
    good = json.dumps({"prompt": "1+1=", "completions": ["2", "3"], "rewards": [1, 0]})
    path = write_lines(
        s["tmp"] / "offline.jsonl", [good, json.dumps({"prompt": "1+1=", "completions": ["2"]})]
    )
    return ["--set", f"buffer.offline_files=['{path}']"], [
        "buffer.offline_files.0",
        f"{path}:2",
        "completions",
    ]


def unreachable_buffer_redis(s: dict) -> tuple[list[str], list[str]]:
    url = f"redis://:preflight-secret@127.0.0.1:{closed_port()}/0"
    return ["--set", "buffer.kind=redis", "--set", f"buffer.redis_url={url}"], [
        "buffer.redis_url",
        "cannot reach Redis",
        ":***@127.0.0.1",  # the password is masked in the message
    ]


def unreachable_prompt_redis(s: dict) -> tuple[list[str], list[str]]:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    return ["--set", "actors.prompt_source=redis", "--set", f"actors.prompt_redis_url={url}"], [
        "actors.prompt_redis_url",
        "cannot reach Redis",
    ]


def unreachable_reward_server(s: dict) -> tuple[list[str], list[str]]:
    url = f"http://127.0.0.1:{closed_port()}"
    return ["--set", f"reward.url={url}"], ["reward.url", "cannot reach the reward server", url]


def run_dir_under_a_file(s: dict) -> tuple[list[str], list[str]]:
    blocker = write_lines(s["tmp"] / "blocker", ["not a folder"])
    s["run_dir"] = blocker / "run"
    return ["--run-dir", str(blocker / "run")], ["run.run_dir", "not a directory"]


def checkpoints_without_resume(s: dict) -> tuple[list[str], list[str]]:
    (s["run_dir"] / "checkpoints" / "step-00000002").mkdir(parents=True)
    return [], ["run.run_dir", "already holds checkpoints", "--resume"]


TRAIN_CASES: dict[str, Case] = {
    "train-prompt-field": bad_train_prompt,
    "train-prompt-json-late-line": bad_json_on_a_later_line,
    "eval-prompt-field": bad_eval_prompt,
    "train-prompts-missing": missing_train_prompts,
    "fewer-prompts-than-actors": fewer_prompts_than_actors,
    "model-missing": missing_model,
    "model-without-config": model_without_config,
    "model-without-tokenizer": model_without_tokenizer,
    "model-without-weights": model_without_weights,
    "reference-missing": missing_reference,
    "reward-model-scorer-files": reward_model_without_tokenizer,
    "entailment-scorer-missing": missing_entailment_model,
    "offline-file-line": bad_offline_line,
    "buffer-redis-unreachable": unreachable_buffer_redis,
    "prompt-redis-unreachable": unreachable_prompt_redis,
    "reward-server-unreachable": unreachable_reward_server,
    "run-dir-not-writable": run_dir_under_a_file,
    "checkpoints-without-resume": checkpoints_without_resume,
}


@pytest.mark.parametrize("case", TRAIN_CASES, ids=list(TRAIN_CASES))
def test_train_reports_bad_input_in_one_line_before_anything_heavy_starts(case: str, setup: dict) -> None:
    args, expected = TRAIN_CASES[case](setup)
    result, elapsed = tandem("train", "--config", str(setup["config"]), "--no-progress", *args)
    line = assert_fails_fast(result, elapsed, setup["run_dir"], expected)
    assert "preflight-secret" not in line


LEARN_CASES: dict[str, Case] = {
    "model-missing": missing_model,
    "reference-missing": missing_reference,
    "buffer-redis-unreachable": unreachable_buffer_redis,
    "checkpoints-without-resume": checkpoints_without_resume,
}


@pytest.mark.parametrize("case", LEARN_CASES, ids=list(LEARN_CASES))
def test_learn_reports_bad_input_in_one_line_before_anything_heavy_starts(case: str, setup: dict) -> None:
    args, expected = LEARN_CASES[case](setup)
    result, elapsed = tandem("learn", "--config", str(setup["config"]), *args)
    assert_fails_fast(result, elapsed, setup["run_dir"], expected)


@pytest.fixture
def reward_server_with_token() -> Iterator[str]:
    """An endpoint that answers /v1/score like a reward server with `auth_token: right-token`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            authorized = self.headers.get("authorization") == "Bearer right-token"
            body = b'{"results": []}' if authorized else b'{"detail": "bad token"}'
            self.send_response(200 if authorized else 401)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_train_names_a_reward_token_the_server_refuses(setup: dict, reward_server_with_token: str) -> None:
    args = ["--set", f"reward.url={reward_server_with_token}", "--set", "reward.auth_token=wrong-token-77"]
    result, elapsed = tandem("train", "--config", str(setup["config"]), *args)
    line = assert_fails_fast(
        result, elapsed, setup["run_dir"], ["reward.url", "refused reward.auth_token (HTTP 401)"]
    )
    assert "wrong-token-77" not in line
    overrides = [f"reward.url={reward_server_with_token}", "reward.auth_token=right-token"]
    config = load_config(setup["config"], overrides, environ={})
    preflight_train(config)  # the right token passes


def test_a_valid_setup_passes_every_check_and_creates_nothing(setup: dict) -> None:
    config = load_config(setup["config"], environ={})
    preflight_train(config)
    preflight_learn(config)
    assert not setup["run_dir"].exists()  # checked for writing without leaving a trace
    (setup["run_dir"] / "checkpoints" / "step-00000002").mkdir(parents=True)
    preflight_train(config, resume=True)  # a resumed run may hold checkpoints


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A private redis-server that requires a password."""
    port, password = closed_port(), "preflight-pass-93c1"
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path), "--requirepass", password],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    try:
        yield port, password
    finally:
        server.kill()
        server.wait()


def test_redis_check_authenticates_and_names_a_missing_or_wrong_password(
    redis_with_password: tuple[int, str],
) -> None:
    port, password = redis_with_password
    check_redis(f"redis://:{password}@127.0.0.1:{port}/0", "buffer.redis_url")
    check_redis(f"redis://default:{password}@127.0.0.1:{port}/3", "buffer.redis_url")  # ACL user, db 3
    check_redis(f"redis://127.0.0.1:{port}/0?password={password}", "buffer.redis_url")
    with pytest.raises(PreflightError, match=r"^buffer\.redis_url: .*requires a password"):
        check_redis(f"redis://127.0.0.1:{port}/0", "buffer.redis_url")
    with pytest.raises(PreflightError, match=r"refused the password") as error:
        check_redis(f"redis://:not-the-password@127.0.0.1:{port}/0", "buffer.redis_url")
    assert "not-the-password" not in str(error.value)
    with pytest.raises(PreflightError, match=r"no database 99"):
        check_redis(f"redis://:{password}@127.0.0.1:{port}/99", "buffer.redis_url")
