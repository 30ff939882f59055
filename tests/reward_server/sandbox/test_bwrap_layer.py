"""The bubblewrap layer alone, without the harness's audit guard: each property must hold even if
user code got past the guard (raw scripts run under the same command line the scorer uses: bwrap,
its mounts and the seccomp filter)."""

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from reward_server.sandbox.bwrap import Interpreter, Limits, run_uid, running_as_root
from reward_server.sandbox.runner import SandboxCommand
from reward_server.sandbox.seccomp import program_fd

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


@contextmanager
def raw_argv(script: str, uid: int) -> Iterator[tuple[list[str], int]]:
    """The scorer's sandbox command line running `script` (after CONFINE), and the fd of the seccomp
    program it names, to pass to the child (closed when the block ends)."""
    command = SandboxCommand.bwrap(Interpreter.current(), running_as_root())
    prelude = CONFINE.format(uid=uid, rlimits=LIMITS.rlimits())
    seccomp_fd = program_fd()
    try:
        argv = [*command.options(seccomp_fd), str(command.interpreter.executable), "-I", "-S", "-c"]
        yield [*argv, prelude + script], seccomp_fd
    finally:
        os.close(seccomp_fd)


def run_raw(script: str, uid: int | None = None) -> subprocess.CompletedProcess:
    with raw_argv(script, run_uid() if uid is None else uid) as (argv, seccomp_fd):
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, pass_fds=(seccomp_fd,))


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


def test_a_thread_bomb_stops_at_the_process_limit() -> None:
    # fork is refused outright by seccomp (test_isolation.py); threads are what RLIMIT_NPROC bounds.
    script = """
import threading, time
threads = 0
try:
    while True:
        threading.Thread(target=time.sleep, args=(2,), daemon=True).start()
        threads += 1
except RuntimeError:
    pass
print(threads)
"""
    result = run_raw(script)
    assert result.returncode == 0, result.stderr
    assert 0 < int(result.stdout) < LIMITS.max_processes


def test_a_fork_bomb_gets_no_child() -> None:
    script = """
import os
try:
    os.fork()
    print('forked')
except OSError as error:
    print(error.errno)
"""
    result = run_raw(script)
    assert result.stdout.split() == ["1"], result.stderr  # EPERM from the seccomp filter


@pytest.mark.skipif(not running_as_root(), reason="counts host processes by the run's uid (root mode)")
def test_a_real_fork_bomb_is_contained_and_dies_with_its_sandbox() -> None:
    # Every process forks forever and never exits: without the limit this takes the machine.
    uid = run_uid()
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    with raw_argv(bomb, uid) as (argv, seccomp_fd):
        proc = subprocess.Popen(
            argv, start_new_session=True, stderr=subprocess.DEVNULL, pass_fds=(seccomp_fd,)
        )
    try:
        # Watched from the start: the bomb's processes live about a second each (RLIMIT_CPU of 1 s
        # spent forking), and the sandbox's own start took over a second in a full suite's grown test
        # process, so one look at a fixed time may find the bomb not yet started or already dead.
        peak, probed, watching = 0, False, time.monotonic()
        while time.monotonic() - watching < 4.0:
            count = processes_of(uid)
            peak = max(peak, count)
            if count and not probed:  # the host still starts processes promptly while the bomb runs
                started = time.perf_counter()
                subprocess.run(["true"], check=True, timeout=5)
                assert time.perf_counter() - started < 1.0
                probed = True
            time.sleep(0.02)
        assert probed, "the bomb never started"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert 1 <= peak <= LIMITS.max_processes
    deadline = time.monotonic() + 5
    while processes_of(uid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_of(uid) == 0  # killing bwrap took the whole pid namespace with it


def test_no_host_config_home_or_repository_is_visible() -> None:
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
    stdlib = Path(os.__file__).resolve().parent
    script = f"""
import os
open('{marker}', 'w').write('sandbox')
for path in ['/usr/x', '{stdlib}/x', '{Interpreter.current().prefix}/x', '/x', '/dev/x', '/dev/shm/x']:
    try:
        open(path, 'w')
        print('wrote', path)
    except OSError as error:
        print('refused', error.errno)
"""
    result = run_raw(script)
    assert result.returncode == 0, result.stderr
    # Everything but /tmp is a read-only mount (EROFS): the stdlib bind, and bwrap's own tmpfs root
    # and /dev (which a user-namespace sandbox would otherwise own and could fill).
    assert result.stdout.split() == ["refused", "30"] * 6
    assert not marker.exists()  # the sandbox's /tmp is its own tmpfs


def test_no_network_and_a_clean_environment() -> None:
    # Two layers: a network namespace holding only lo (read from /proc: listing interfaces takes a
    # socket), and no socket at all (seccomp).
    script = """
import os, socket
print(sorted(os.environ))
print(sorted(line.split(':')[0].strip() for line in open('/proc/net/dev').readlines()[2:]))
try:
    socket.create_connection(('1.1.1.1', 53), timeout=1)
    print('connected')
except PermissionError:
    print('no-socket')
except OSError:
    print('unreachable')
"""
    result = run_raw(script)
    assert result.returncode == 0, result.stderr
    env, interfaces, reach = result.stdout.splitlines()
    assert env == "['HOME', 'LANG', 'PATH', 'PWD']"
    assert interfaces == "['lo']"
    assert reach == "no-socket"


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
