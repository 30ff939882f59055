"""Helpers shared by the reward-server tests: configs, request bodies, metric reads, model builds."""

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from core.config.reward import ExactMatchScorerConfig, PythonScorerConfig, RewardConfig

ROOT = Path(__file__).resolve().parents[2]
TANDEM = Path(sys.executable).with_name("tandem")
NUMBER = r"^\s*(-?\d+)"  # the demo's exact_match pattern: the first integer of the completion
LOOPBACK = "http://127.0.0.1"
"""TestClient base URL: a server bound to loopback refuses TestClient's default Host, `testserver`."""


def exact_match(name: str = "exact_match", weight: float = 1.0, **options: Any) -> ExactMatchScorerConfig:
    return ExactMatchScorerConfig(name=name, weight=weight, pattern=NUMBER, numeric_tolerance=0, **options)


def python_scorer(function: str, name: str = "python", weight: float = 1.0) -> PythonScorerConfig:
    """A `python` scorer running a function of reward_functions.py (on sys.path in these tests)."""
    return PythonScorerConfig(name=name, weight=weight, function=f"reward_functions:{function}")


def reward_config(*scorers: Any, **fields: Any) -> RewardConfig:
    return RewardConfig(scorers=list(scorers) or [exact_match()], **fields)


def item(prompt: str, completion: str, reference: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"prompt": prompt, "completion": completion, "reference": reference, **fields}


def metric(name: str, **labels: str) -> float:
    """Current value of a Prometheus sample in the default registry (0.0 when not yet created)."""
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def make_model(kind: str, out_dir: Path) -> subprocess.Popen[str]:
    """Start `tandem make-model --kind KIND` (the command users run) in the background."""
    command = [str(TANDEM), "make-model", "--task", "arithmetic", "--kind", kind, "--out", str(out_dir)]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def build_summary(process: subprocess.Popen[str]) -> dict[str, Any]:
    """Wait for a `make-model` run and return the JSON summary it prints last."""
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    starts = [match.start() for match in re.finditer(r"^\{$", output, re.MULTILINE)]
    assert starts, f"no JSON summary in the output of make-model:\n{output[-3000:]}"
    summary = json.loads(output[starts[-1] :])
    summary["output"] = output
    return summary
