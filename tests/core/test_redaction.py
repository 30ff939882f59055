"""The one redaction: URL passwords, tokens and http scorer headers are masked in every dump of the
config (`tandem config show`, `config.yaml`, what `train`/`learn` print, the reward server's launch
line) and in log lines, including log lines that print a URL the config never held."""

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import yaml

from core.config import load_config
from core.redaction import REDACTED, RedactingFormatter, redact_text, redact_tree, redact_url, secret_values
from services.orchestration.run_files import resolved_yaml

ROOT = Path(__file__).resolve().parents[2]
TOKEN, HEADER, BUFFER_PASSWORD, PROMPT_PASSWORD = "tok-1f8e", "hdr-6b0d", "bufpw-93a2", "prmpw-4c7e"
SECRETS = (TOKEN, HEADER, BUFFER_PASSWORD, PROMPT_PASSWORD)
OVERRIDES = [
    f"reward.auth_token={TOKEN}",
    "reward.scorers=[{name: judge, type: http, url: 'http://127.0.0.1:9/score', format: template, "
    f"request_template: {{q: '{{prompt}}'}}, headers: {{Authorization: 'Bearer {HEADER}'}}}}]",
    f"buffer.redis_url=redis://:{BUFFER_PASSWORD}@redis.internal:6379/0",
    f"actors.prompt_redis_url=redis://feeder:{PROMPT_PASSWORD}@redis.internal:6379/1",
]


def test_redact_url_masks_the_password_and_keeps_the_rest() -> None:
    assert redact_url("redis://:pw@host:6379/0") == f"redis://:{REDACTED}@host:6379/0"
    assert redact_url("redis://user:pw@host/2") == f"redis://user:{REDACTED}@host/2"
    assert redact_url("https://tokenonly@host/x") == f"https://{REDACTED}@host/x"
    assert "pw" not in redact_url("redis://host:6379/0?password=pw&db=1")
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"
    assert redact_url("not a url") == "not a url"


def test_every_secret_of_the_config_is_masked_in_its_dump() -> None:
    config = load_config(None, OVERRIDES, environ={})
    text = resolved_yaml(config)
    for secret in SECRETS:
        assert secret not in text, secret
    tree = yaml.safe_load(text)
    assert tree["reward"]["auth_token"] == REDACTED
    assert tree["reward"]["scorers"][0]["headers"] == {"Authorization": REDACTED}
    assert tree["buffer"]["redis_url"] == f"redis://:{REDACTED}@redis.internal:6379/0"
    assert tree["actors"]["prompt_redis_url"] == f"redis://feeder:{REDACTED}@redis.internal:6379/1"
    assert tree["learner"] == config.model_dump(mode="json")["learner"]  # the rest is untouched
    assert config.reward.redacted() == tree["reward"]  # the reward server's dump is the same function's
    assert set(SECRETS) <= secret_values(config.model_dump(mode="json"))


def test_config_show_prints_no_secret() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    args = [arg for override in OVERRIDES for arg in ("--set", override)]
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "config", "show", str(ROOT / "configs" / "demo.yaml"), *args],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for secret in SECRETS:
        assert secret not in result.stdout + result.stderr, secret
    assert yaml.safe_load(result.stdout)["reward"]["auth_token"] == REDACTED


def test_log_lines_are_masked_whatever_prints_the_secret() -> None:
    config = load_config(None, OVERRIDES, environ={})
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(message)s", secret_values(config.model_dump())))
    log = logging.getLogger("tandem-redaction-test")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("buffer at %s", config.buffer.redis_url)
        log.warning("header was %r", config.reward.scorers[0].headers)  # type: ignore[union-attr]
        log.warning("token %s", TOKEN)
        log.warning("a URL the config never held: redis://:other-password@elsewhere:6379/0")
        try:
            raise ValueError(f"cannot connect to {config.actors.prompt_redis_url}")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    for secret in (*SECRETS, "other-password"):
        assert secret not in text, (secret, text)
    assert f"redis://:{REDACTED}@elsewhere:6379/0" in text and "Traceback" in text


def test_redact_text_leaves_short_strings_and_plain_text_alone() -> None:
    assert redact_text("step 3 loss 0.25", {"ab"}) == "step 3 loss 0.25"  # too short to search for
    assert redact_tree({"learner": {"lr": 0.1}, "stop": ["\n"]}) == {"learner": {"lr": 0.1}, "stop": ["\n"]}
