"""The bubblewrap layer alone, without the harness's audit guard: each property must hold even if
user code got past the guard (raw scripts run under the same command line the scorer uses)."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from reward_server.sandbox.bwrap import Interpreter, Limits, bwrap_argv, run_uid, running_as_root

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
ROOT = Path(__file__).resolve().parents[3]
# What the harness does before user code: the run's uid (root mode) and the rlimits.
CONFINE = """
import os, resource, sys
if os.geteuid() == 0:
    os.setgroups([]); os.setresgid({uid}, {uid}, {uid}); os.setresuid({uid}, {uid}, {uid})
for name, soft, hard in {rlimits!r}:
    resource.setrlimit(getattr(resource, name), (soft, hard))
"""
LIMITS = Limits(timeout_s=5, cpu_seconds=1, memory_mb=256, max_processes=8, max_output_bytes=65536)


def raw_argv(script: str, uid: int) -> list[str]:
    interpreter = Interpreter.current()
    prelude = CONFINE.format(uid=uid, rlimits=LIMITS.rlimits())
    argv = [*bwrap_argv(interpreter, running_as_root()), str(interpreter.executable), "-I", "-S", "-c"]
    return [*argv, prelude + script]


def run_raw(script: str, uid: int | None = None) -> subprocess.CompletedProcess:
    argv = raw_argv(script, run_uid() if uid is None else uid)
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def processes_of(uid: int) -> int:
    """Processes (not threads) on the host whose real uid is `uid`."""
    count = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            uid_line = next(line for line in status.read_text().splitlines() if line.startswith("Uid:"))
        except (FileNotFoundError, ProcessLookupError):
            continue
        count += int(uid_line.split()[1]) == uid
    return count


def test_a_fork_bomb_stops_at_the_process_limit() -> None:
    script = """
import os, time
children = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(2)
            os._exit(0)
        children += 1
except OSError:
    pass
print(children)
"""
    result = run_raw(script)
    assert result.returncode == 0, result.stderr
    assert 0 < int(result.stdout) < LIMITS.max_processes


@pytest.mark.skipif(not running_as_root(), reason="counts host processes by the run's uid (root mode)")
def test_a_real_fork_bomb_is_contained_and_dies_with_its_sandbox() -> None:
    # Every process forks forever and never exits: without the limit this takes the machine.
    uid = run_uid()
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    proc = subprocess.Popen(raw_argv(bomb, uid), start_new_session=True, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        peak = processes_of(uid)
        # The host still starts processes promptly while the bomb runs.
        started = time.perf_counter()
        subprocess.run(["true"], check=True, timeout=5)
        assert time.perf_counter() - started < 1.0
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert 1 <= peak <= LIMITS.max_processes
    deadline = time.monotonic() + 5
    while processes_of(uid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_of(uid) == 0  # killing bwrap took the whole pid namespace with it


def test_only_the_interpreter_and_usr_are_visible() -> None:
    script = """
import os
print(sorted(os.listdir('/')))
for path in ['/etc/shadow', '/etc/passwd', '/work', '/home', '{root}', '/root/.bashrc']:
    print(path, os.path.exists(path))
""".replace("{root}", str(ROOT))
    result = run_raw(script)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "etc" not in lines[0] and "work" not in lines[0] and "home" not in lines[0]
    assert all(line.endswith("False") for line in lines[1:]), lines


def test_the_root_is_read_only_and_tmp_is_private() -> None:
    marker = Path("/tmp") / f"sandbox-private-{os.getpid()}"
    script = f"""
import os
open('{marker}', 'w').write('sandbox')
for path in ['/usr/x', '{Interpreter.current().prefix}/x', '/x']:
    try:
        open(path, 'w')
        print('wrote', path)
    except OSError as error:
        print('refused', error.errno)
"""
    result = run_raw(script)
    assert result.returncode == 0, result.stderr
    # /usr and the interpreter are read-only mounts (EROFS); / is bwrap's own root-owned tmpfs (EACCES).
    assert result.stdout.split() == ["refused", "30", "refused", "30", "refused", "13"]
    assert not marker.exists()  # the sandbox's /tmp is its own tmpfs


def test_no_network_and_a_clean_environment() -> None:
    script = """
import os, socket
print(sorted(os.environ))
print([name for _, name in socket.if_nameindex()])
try:
    socket.create_connection(('1.1.1.1', 53), timeout=1)
    print('connected')
except OSError:
    print('unreachable')
"""
    result = run_raw(script)
    assert result.returncode == 0, result.stderr
    env, interfaces, reach = result.stdout.splitlines()
    assert env == "['HOME', 'LANG', 'PATH', 'PWD']"
    assert interfaces == "['lo']"
    assert reach == "unreachable"


@pytest.mark.skipif(not running_as_root(), reason="root mode drops to the run's uid")
def test_user_code_runs_unprivileged() -> None:
    uid = run_uid()
    script = (
        "import os\nprint(os.getresuid(), open('/proc/self/status').read().split('CapEff:')[1].split()[0])"
    )
    result = run_raw(script, uid=uid)
    assert result.stdout.split() == [f"({uid},", f"{uid},", f"{uid})", "0000000000000000"]


def test_dangerous_extension_modules_are_not_in_the_sandbox() -> None:
    script = """
for name in ['_ctypes', '_posixsubprocess', '_testcapi']:
    try:
        __import__(name)
        print(name, 'imported')
    except ImportError:
        print(name, 'missing')
"""
    result = run_raw(script)
    assert result.stdout.split() == [
        "_ctypes",
        "missing",
        "_posixsubprocess",
        "missing",
        "_testcapi",
        "missing",
    ]
