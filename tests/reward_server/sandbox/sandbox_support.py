"""Helpers shared by the sandbox tests."""

import os
import shutil
import subprocess
from pathlib import Path


def running_sandboxes() -> list[int]:
    """Live (non-zombie) bwrap processes started by this test process: sandboxes still running."""
    me, found = os.getpid(), []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            program = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        # Fields after the ")" closing the command name: state, ppid, ...
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if int(ppid) == me and state != "Z" and Path(os.fsdecode(program)).name == "bwrap":
            found.append(int(entry.name))
    return found


def find_python(version: str) -> Path | None:
    """The real binary of python`version` (a pyenv shim is a shell script, which the sandbox could
    not run), or None where this machine has none."""
    found = shutil.which(f"python{version}")
    candidates = [found] if found else []
    candidates += sorted(
        str(path) for path in Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}")
    )
    for candidate in candidates:
        try:
            result = subprocess.run(
                [candidate, "-I", "-S", "-c", "import sys; print(sys.executable)"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if result.returncode == 0 and result.stdout.strip():
            return Path(result.stdout.strip()).resolve()
    return None
