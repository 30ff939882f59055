"""The deployment files: the compose file validates with docker-compose, requires its secrets, keeps
them off every command line, binds the Ray dashboard and the reward server to loopback, makes Redis
require its password, and points every service at the config keys Tandem reads; the Ray cluster file
does the same; the Dockerfiles copy every package."""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from core.config import TandemConfig
from core.config.loader import environment_overrides

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
CLUSTER = ROOT / "deploy" / "ray-cluster.yaml"
TOKEN, REDIS_PASSWORD = "reward-token-4f1c9a", "redis-password-7b2e5d"
SECRETS = {"TANDEM_REWARD_TOKEN": TOKEN, "TANDEM_REDIS_PASSWORD": REDIS_PASSWORD}


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    docker_compose = shutil.which("docker-compose")
    assert docker_compose, "docker-compose is missing: `make install` installs it"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")} | env
    return subprocess.run(
        [docker_compose, "-f", str(COMPOSE), "config"], capture_output=True, text=True, env=clean, cwd=ROOT
    )


def compose_services() -> dict:
    result = compose_config(SECRETS)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def command_lines(service: dict) -> list[str]:
    """Everything a service runs as argv: entrypoint, command, healthcheck (as compose resolved them)."""
    words: list[str] = []
    for key in ("entrypoint", "command"):
        value = service.get(key) or []
        words += [value] if isinstance(value, str) else value
    test = (service.get("healthcheck") or {}).get("test") or []
    words += [test] if isinstance(test, str) else test
    return words


def test_compose_file_is_valid_with_its_required_variables() -> None:
    result = compose_config(SECRETS)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) == {"redis", "ray-head", "ray-worker", "reward-server", "trainer"}
    assert "--appendonly" in services["redis"]["command"]
    for name in ("redis", "ray-head", "reward-server"):
        assert "healthcheck" in services[name], name


def test_compose_fails_fast_without_the_reward_token() -> None:
    result = compose_config({"TANDEM_REDIS_PASSWORD": REDIS_PASSWORD})
    assert result.returncode != 0
    assert "TANDEM_REWARD_TOKEN" in result.stderr


def test_compose_fails_fast_without_the_redis_password() -> None:
    result = compose_config({"TANDEM_REWARD_TOKEN": TOKEN})
    assert result.returncode != 0
    assert "TANDEM_REDIS_PASSWORD" in result.stderr


def test_compose_puts_no_secret_on_a_command_line() -> None:
    for name, service in compose_services().items():
        argv = " ".join(command_lines(service))
        assert TOKEN not in argv and REDIS_PASSWORD not in argv, name
        assert "auth_token" not in argv.lower(), name


def test_compose_binds_the_ray_dashboard_and_the_reward_port_to_loopback() -> None:
    services = compose_services()
    head = command_lines(services["ray-head"])
    assert "--dashboard-host=127.0.0.1" in head
    for name, service in services.items():
        assert not any(
            w.startswith("--dashboard-host=") and w != "--dashboard-host=127.0.0.1"
            for w in command_lines(service)
        ), name
        for port in service.get("ports") or []:
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).rsplit(":", 2)[0]
            assert host_ip == "127.0.0.1", (name, port)
    assert services["reward-server"]["ports"], "the reward server is published (on loopback)"


def test_compose_redis_requires_the_password_from_the_environment() -> None:
    services = compose_services()
    redis_service = services["redis"]
    assert redis_service["environment"]["REDIS_PASSWORD"] == REDIS_PASSWORD
    assert redis_service["environment"]["REDISCLI_AUTH"] == REDIS_PASSWORD  # the healthcheck's password
    assert "requirepass" in " ".join(command_lines(redis_service))
    for name in ("trainer", "ray-head", "ray-worker"):
        environment = services[name]["environment"]
        for key in ("TANDEM_BUFFER__REDIS_URL", "TANDEM_ACTORS__PROMPT_REDIS_URL"):
            url = urlsplit(environment[key])
            assert (url.hostname, url.password) == ("redis", REDIS_PASSWORD), (name, key)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_compose_redis_entrypoint_and_healthcheck_work_against_a_real_redis(tmp_path: Path) -> None:
    """The redis service's entrypoint script and healthcheck, run here against redis-server (with a
    stand-in for the image's docker-entrypoint.sh, which ends in `exec "$@"`): Redis refuses PING
    without the password, and the healthcheck passes with the environment compose gives it."""
    redis_service = compose_services()["redis"]
    entrypoint, command = redis_service["entrypoint"], redis_service["command"]
    assert entrypoint[:2] == ["sh", "-c"] and command[0] == "redis-server"
    script = entrypoint[2].replace("$$", "$")  # `compose config` writes $ escaped, as compose input
    (tmp_path / "docker-entrypoint.sh").write_text('#!/bin/sh\nexec "$@"\n')
    (tmp_path / "docker-entrypoint.sh").chmod(0o755)
    port = free_port()
    environment = os.environ | redis_service["environment"] | {"PATH": f"{tmp_path}:{os.environ['PATH']}"}
    argv = [*entrypoint[:2], script, *entrypoint[3:], *command, "--port", str(port), "--dir", str(tmp_path)]
    server = subprocess.Popen(argv, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            ping = subprocess.run(
                ["redis-cli", "-p", str(port), "ping"],
                capture_output=True,
                text=True,
                env={k: v for k, v in environment.items() if k != "REDISCLI_AUTH"},
            )
            if "NOAUTH" in ping.stdout + ping.stderr or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert "NOAUTH" in ping.stdout + ping.stderr  # up, and refusing commands without the password
        health = redis_service["healthcheck"]["test"]
        assert health[0] == "CMD-SHELL"
        check = subprocess.run(
            ["sh", "-c", health[1].replace("redis-cli", f"redis-cli -p {port}")], env=environment
        )
        assert check.returncode == 0
    finally:
        server.kill()
        server.wait()


def test_ray_cluster_binds_the_dashboard_to_loopback_and_keeps_the_token_off_command_lines() -> None:
    cluster = yaml.safe_load(CLUSTER.read_text())
    commands = cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"]
    heads = [command for command in commands if "--head" in command]
    assert heads and all("--dashboard-host=127.0.0.1" in command for command in heads)
    assert not any("0.0.0.0" in command and "dashboard" in command for command in commands)
    for command in commands:
        assert "auth_token" not in command.lower() and "TOKEN" not in command, command
        assert "PASSWORD" not in command, command
    assert "tandem.env" in " ".join(cluster.get("file_mounts", {}))  # the secrets arrive as a file


def test_compose_environment_is_a_valid_tandem_config() -> None:
    result = compose_config(SECRETS)
    environment = yaml.safe_load(result.stdout)["services"]["trainer"]["environment"]
    overrides = environment_overrides({k: str(v) for k, v in environment.items()})
    tree: dict = {}
    for key, value in overrides.items():
        section, field = key.split(".")
        tree.setdefault(section, {})[field] = value
    config = TandemConfig.model_validate(tree)
    assert config.buffer.kind == "redis" and config.reward.url == "http://reward-server:8100"
    assert config.run.ray_address == "ray-head:6379"


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfiles_copy_every_package(dockerfile: str) -> None:
    text = (ROOT / "deploy" / dockerfile).read_text()
    for package in ("services", "learner", "actors", "reward_server", "configs"):
        assert f"COPY {package} {package}" in text
