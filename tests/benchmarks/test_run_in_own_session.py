"""The benchmarks' process runner: exit status, output to the log, and a kill past the limit that reaches
every process the command started (benchmarks/harness.py)."""

import os
import time
from pathlib import Path

from harness import run_in_own_session


def test_the_exit_status_and_output_come_back(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    code = run_in_own_session(["bash", "-c", "echo hello; exit 3"], tmp_path, dict(os.environ), log, 30)
    assert code == 3 and log.read_text().strip() == "hello"


def test_past_the_limit_the_whole_session_is_killed(tmp_path: Path) -> None:
    log, pid_file = tmp_path / "run.log", tmp_path / "child.pid"
    script = f"sleep 60 & echo $! > {pid_file}; wait"
    started = time.monotonic()
    assert run_in_own_session(["bash", "-c", script], tmp_path, dict(os.environ), log, 1.0) is None
    assert time.monotonic() - started < 30
    child = int(pid_file.read_text())
    for _ in range(50):  # the grandchild is gone too, not left running
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"process {child}, started by the command, outlived the kill")
