"""Reward-server fixtures: the tiny reward and NLI models, built once per session with `tandem make-model`.

Both builds start together (each trains on one thread, so on two cores they take about as long as
the slower one, ~40 s) into a session temp directory.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from reward_support import build_summary, make_model


@dataclass(frozen=True)
class TinyClassifiers:
    reward_model: Path
    nli_model: Path
    reward_summary: dict[str, Any]
    nli_summary: dict[str, Any]


@pytest.fixture(scope="session")
def tiny_classifiers(tmp_path_factory: pytest.TempPathFactory) -> TinyClassifiers:
    root = tmp_path_factory.mktemp("tiny-classifiers")
    builds = [make_model("reward", root / "reward"), make_model("nli", root / "nli")]
    try:
        reward_summary, nli_summary = [build_summary(build) for build in builds]
    finally:
        for build in builds:
            if build.poll() is None:  # the other build failed: do not leave this one running
                build.kill()
                build.wait()
    return TinyClassifiers(root / "reward", root / "nli", reward_summary, nli_summary)
