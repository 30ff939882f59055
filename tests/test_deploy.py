"""The deployment files: the compose file validates with docker-compose, requires its secret, and
points every service at the config keys Tandem reads; the Dockerfiles copy every package."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from core.config import TandemConfig
from core.config.loader import environment_overrides

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    docker_compose = shutil.which("docker-compose")
    assert docker_compose, "docker-compose is missing: `make install` installs it"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")} | env
    return subprocess.run(
        [docker_compose, "-f", str(COMPOSE), "config"], capture_output=True, text=True, env=clean, cwd=ROOT
    )


def test_compose_file_is_valid_with_its_required_variables() -> None:
    result = compose_config({"TANDEM_REWARD_TOKEN": "a-long-token"})
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) == {"redis", "ray-head", "ray-worker", "reward-server", "trainer"}
    assert "--appendonly" in services["redis"]["command"]
    for name in ("redis", "ray-head", "reward-server"):
        assert "healthcheck" in services[name], name


def test_compose_fails_fast_without_the_reward_token() -> None:
    result = compose_config({})
    assert result.returncode != 0
    assert "TANDEM_REWARD_TOKEN" in result.stderr


def test_compose_environment_is_a_valid_tandem_config() -> None:
    result = compose_config({"TANDEM_REWARD_TOKEN": "a-long-token"})
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
