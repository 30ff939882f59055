"""Weights staged as a private file for the engine's workers to read, and the sweep of orphans.

`collective_rpc` is vLLM's control path: sending the blob itself through it cost 2.0 of a 2.6 s load
at 100 M parameters (msgpack plus the shared-memory queue, docs/benchmarks.md); a path costs nothing,
and writing and reading the file is two memory copies. The workers run on this machine. The file
goes to /dev/shm (memory) when it has room, else, or when it fills up while being written (several
actors staging at once), to the temporary directory (containers often give /dev/shm 64 MB).

A file outlives its load only when the process that staged it was killed mid-load; each engine
removes such orphans when it starts, since in /dev/shm they hold memory until the machine restarts.
"""

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SHARED_MEMORY = Path("/dev/shm")
PREFIX = "tandem-weights-"
ORPHAN_AGE_S = 60.0  # a load takes seconds; younger files may belong to a process we cannot see


@contextmanager
def staged_blob(blob: bytes) -> Iterator[Path]:
    """The blob as a private file, named after this process, removed afterwards (also on failure)."""
    path = _write(blob)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _write(blob: bytes) -> Path:
    directories = [SHARED_MEMORY] if _has_room(SHARED_MEMORY, len(blob)) else []
    directories.append(Path(tempfile.gettempdir()))
    prefix = f"{PREFIX}{os.getpid()}-"
    for index, directory in enumerate(directories):
        path = None
        try:
            handle, name = tempfile.mkstemp(prefix=prefix, suffix=".safetensors", dir=directory)
            path = Path(name)
            with os.fdopen(handle, "wb") as file:
                file.write(blob)
            return path
        except OSError:
            if path is not None:
                path.unlink(missing_ok=True)  # a part-written file would hold the memory it took
            if index == len(directories) - 1:
                raise
    raise AssertionError("unreachable: the last directory either returns or raises")


def remove_orphans(now: float | None = None) -> list[Path]:
    """Delete staged files whose process is gone and that are older than a load could be."""
    now = time.time() if now is None else now
    removed = []
    for directory in {SHARED_MEMORY, Path(tempfile.gettempdir())}:
        for path in directory.glob(f"{PREFIX}*-*.safetensors"):
            owner = path.name[len(PREFIX) :].split("-", 1)[0]
            try:
                old = now - path.stat().st_mtime > ORPHAN_AGE_S
            except FileNotFoundError:
                continue  # its load just ended
            if owner.isdigit() and old and not _alive(int(owner)):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _has_room(directory: Path, size: int) -> bool:
    try:
        return shutil.disk_usage(directory).free > 2 * size
    except OSError:
        return False
