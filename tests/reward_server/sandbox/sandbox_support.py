"""Helpers shared by the sandbox tests."""

import os
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
