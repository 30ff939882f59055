"""Staged weight files: private, removed after the load, moved to the temporary directory when /dev/shm
has no room or fills up mid-write, and orphans of killed processes swept."""

import errno
import os
import subprocess
import time
from pathlib import Path

import pytest

from actors import staging


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    shm, temporary = tmp_path / "shm", tmp_path / "tmp"
    shm.mkdir(), temporary.mkdir()
    monkeypatch.setattr(staging, "SHARED_MEMORY", shm)
    monkeypatch.setattr(staging.tempfile, "tempdir", str(temporary))
    return shm, temporary


BLOB = b"\x00\x01" * 1000


def test_the_blob_is_a_private_file_in_shared_memory_removed_after(dirs: tuple[Path, Path]) -> None:
    shm, _ = dirs
    with staging.staged_blob(BLOB) as path:
        assert path.parent == shm and path.read_bytes() == BLOB
        assert path.name.startswith(f"tandem-weights-{os.getpid()}-")
        assert path.stat().st_mode & 0o077 == 0  # mkstemp: readable by this user only
    assert not path.exists()
    with pytest.raises(RuntimeError), staging.staged_blob(BLOB) as path:
        raise RuntimeError("a failed load")
    assert not path.exists()  # removed on failure too


def test_without_room_in_shared_memory_the_temporary_directory_is_used(
    dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, temporary = dirs
    monkeypatch.setattr(staging, "_has_room", lambda directory, size: False)
    with staging.staged_blob(BLOB) as path:
        assert path.parent == temporary and path.read_bytes() == BLOB


def test_shared_memory_filling_up_mid_write_falls_back_and_leaves_no_part_file(
    dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    shm, temporary = dirs
    real_fdopen, failures = os.fdopen, []

    def full_once(fd: int, mode: str):  # type: ignore[no-untyped-def]
        file = real_fdopen(fd, mode)
        if not failures:
            failures.append(fd)
            file.close()
            raise OSError(errno.ENOSPC, "No space left on device")
        return file

    monkeypatch.setattr(staging.os, "fdopen", full_once)
    with staging.staged_blob(BLOB) as path:
        assert path.parent == temporary and path.read_bytes() == BLOB
    assert failures and list(shm.iterdir()) == []


def test_orphans_of_dead_processes_are_removed_and_nothing_else(dirs: tuple[Path, Path]) -> None:
    shm, _ = dirs
    finished = subprocess.Popen(["true"])
    finished.wait()
    old = time.time() - 2 * staging.ORPHAN_AGE_S
    orphan = shm / f"tandem-weights-{finished.pid}-a.safetensors"
    young = shm / f"tandem-weights-{finished.pid}-b.safetensors"  # may be another namespace's, mid-load
    ours = shm / f"tandem-weights-{os.getpid()}-c.safetensors"
    unrelated = shm / "something-else.safetensors"
    for path in (orphan, young, ours, unrelated):
        path.write_bytes(b"x")
    for path in (orphan, ours, unrelated):
        os.utime(path, (old, old))
    assert staging.remove_orphans() == [orphan]
    assert not orphan.exists() and young.exists() and ours.exists() and unrelated.exists()
