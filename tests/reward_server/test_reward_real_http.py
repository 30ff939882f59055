"""The reward server over real HTTP: uvicorn on a thread, and `tandem reward-server` as a subprocess."""

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from reward_support import ROOT, TANDEM, exact_match, item, reward_config

from reward_server.app import create_app
from services.embedded_server import serve

TOKEN = "s3cret-9f2c"
ITEMS = [item("1+1=", "2", "2"), item("2+2=", " 5", "4"), item("3+3=", "6", None)]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve(create_app(reward_config(exact_match(), max_body_bytes=4096))) as url:
        yield url


def test_scores_over_real_http(server: str) -> None:
    response = httpx.post(f"{server}/v1/score", json={"items": ITEMS})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["reward"], r["status"]) for r in results] == [(1.0, "ok"), (0.0, "ok"), (None, "error")]


def test_openrlhf_over_real_http(server: str) -> None:
    body = {"query": ["1+1=2", "1+1=3"], "prompts": ["1+1=", "1+1="], "labels": ["2", "2"]}
    assert httpx.post(f"{server}/get_reward", json=body).json()["rewards"] == [1.0, 0.0]


def test_a_request_addressed_to_another_host_is_refused_over_real_http(server: str) -> None:
    """DNS rebinding: evil.example re-pointed at 127.0.0.1 reaches the port, but names itself in Host."""
    port = httpx.URL(server).port
    refused = httpx.post(
        f"{server}/v1/score", json={"items": ITEMS}, headers={"Host": f"evil.example:{port}"}
    )
    assert refused.status_code == 421 and "DNS rebinding" in refused.json()["detail"]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "127.0.0.1"):
        response = httpx.post(f"{server}/v1/score", json={"items": ITEMS}, headers={"Host": host})
        assert response.status_code == 200, host


def test_a_chunked_upload_over_the_limit_is_cut_off_with_413(server: str) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b" " * 1000

    response = httpx.post(
        f"{server}/v1/score", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_metrics_and_probes_over_real_http(server: str) -> None:
    httpx.post(f"{server}/v1/score", json={"items": ITEMS})
    metrics = httpx.get(f"{server}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert re.search(
        r'tandem_reward_scorer_items_total\{scorer="exact_match",status="error"\} [1-9]', metrics.text
    )
    assert httpx.get(f"{server}/ready").json()["ready"] is True


def start_cli(config: Path, *flags: str) -> tuple[subprocess.Popen[str], str, str]:
    """Run `tandem reward-server` on port 0; its base URL (read from uvicorn's log) and the output so far."""
    command = [str(TANDEM), "reward-server", "--config", str(config), "--port", "0", *flags]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 120
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if found := re.search(r"Uvicorn running on (http://\S+)", line):
            return process, found.group(1), "".join(lines)
    process.kill()
    raise AssertionError("tandem reward-server did not start:\n" + "".join(lines))


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "reward.yaml"
    scorers = [{"name": "exact_match", "type": "exact_match", "pattern": r"^\s*(-?\d+)", "weight": 2.0}]
    path.write_text(yaml.safe_dump({"reward": {"scorers": scorers, "auth_token": TOKEN, "port": 1}}))
    return path


def test_the_cli_serves_the_configured_scorers(config_file: Path) -> None:
    process, url, _ = start_cli(config_file, "--host", "127.0.0.1")
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        results = httpx.post(f"{url}/v1/score", json={"items": ITEMS[:2]}, headers=headers).json()["results"]
        assert [r["reward"] for r in results] == [2.0, 0.0]
        assert httpx.post(f"{url}/v1/score", json={"items": ITEMS[:2]}).status_code == 401
    finally:
        stop(process)


def test_the_cli_prints_the_resolved_config_with_the_token_masked(config_file: Path) -> None:
    process, _, output = start_cli(config_file)
    stop(process)
    printed = output[: output.index("\n}\n") + 3]
    assert '"auth_token": "***"' in printed and '"port": 0' in printed and TOKEN not in printed


def test_the_cli_runs_several_workers(config_file: Path) -> None:
    process, url, _ = start_cli(config_file, "--workers", "2")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        rewards = set()
        for _ in range(60):  # the workers may still be starting after the socket is bound
            try:
                response = httpx.post(f"{url}/v1/score", json={"items": ITEMS[:1]}, headers=headers)
            except httpx.TransportError:
                time.sleep(0.5)
                continue
            rewards.add(response.json()["results"][0]["reward"])
            break
        assert rewards == {2.0}
    finally:
        stop(process)


def test_the_cli_refuses_a_public_bind_without_a_token(tmp_path: Path) -> None:
    config = tmp_path / "open.yaml"
    config.write_text(yaml.safe_dump({"reward": {"scorers": [{"name": "em", "type": "exact_match"}]}}))
    result = subprocess.run(
        [str(TANDEM), "reward-server", "--config", str(config), "--host", "0.0.0.0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "binding to '0.0.0.0' (not a loopback address) requires reward.auth_token" in result.stderr


def test_the_cli_reports_a_bad_config_with_its_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        yaml.safe_dump({"reward": {"scorers": [{"name": "em", "type": "exact_match", "tolerance": 1}]}})
    )
    result = subprocess.run(
        [str(TANDEM), "reward-server", "--config", str(config)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "reward.scorers.0.tolerance: unknown key" in result.stderr
