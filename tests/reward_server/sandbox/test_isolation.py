"""The isolation layer (bwrap mounts, the seccomp filter, memory limits) against completions that
have already beaten the harness's audit guard: raw scripts under the scorer's own sandbox command
line, the filter loaded on its own into a host process that makes raw syscalls through ctypes, and
hostile completions through the `unit_tests` scorer (each must score 0 while honest code scores 1).

Non-root mode (bwrap in a user namespace) is run as `nobody` through setpriv where this machine
allows it, and skipped with the reason otherwise.
"""

import asyncio
import errno
import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyseccomp
import pytest

from core.config.reward import UnitTestsScorerConfig
from reward_server.sandbox import runner, seccomp
from reward_server.sandbox.bwrap import (
    TMP_BYTES,
    Interpreter,
    Limits,
    linked_libraries,
    mount_plan,
    run_uid,
    running_as_root,
)
from reward_server.sandbox.runner import SandboxCommand
from reward_server.scorers.base import ScoreItem
from reward_server.scorers.unit_tests import SandboxUnavailableError, UnitTestsScorer

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
LIMITS = Limits(timeout_s=10, cpu_seconds=5, memory_mb=256, max_processes=8, max_output_bytes=1 << 20)
# What the harness does before user code: the run's uid (root mode) and the rlimits.
CONFINE = """
import os, resource
if os.geteuid() == 0:
    os.setgroups([]); os.setresgid({uid}, {uid}, {uid}); os.setresuid({uid}, {uid}, {uid})
for name, soft, hard in {rlimits!r}:
    resource.setrlimit(getattr(resource, name), (soft, hard))
"""
NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "--"]
# Where Debian keeps packages of its own Python (python3-cffi-backend's _cffi_backend among them).
FOREIGN_PACKAGE_DIRS = ("/usr/lib/python3/dist-packages", "/usr/local/lib/python3.11/dist-packages")
TOOLS = {"gcc", "cc", "c++", "g++", "cpp", "as", "ld", "ld.bfd", "ld.gold", "cc1", "tcc", "clang"}
SHELLS = {"sh", "bash", "dash", "busybox", "perl", "env"}
SUFFIX = "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))"


@contextmanager
def sandbox_argv(script: str, interpreter: Interpreter, as_root: bool) -> Iterator[tuple[list[str], int]]:
    """The scorer's sandbox command line for `interpreter` running CONFINE + `script`, and the fd
    of the seccomp program it names (closed when the block ends)."""
    command = SandboxCommand.bwrap(interpreter, as_root)
    prelude = CONFINE.format(uid=run_uid(), rlimits=LIMITS.rlimits())
    seccomp_fd = seccomp.program_fd()
    try:
        argv = [*command.options(seccomp_fd), str(interpreter.executable), "-I", "-S", "-c", prelude + script]
        # As root, a user-namespace sandbox is started by `nobody`, as an unprivileged server would.
        yield (argv if as_root or not running_as_root() else [*NOBODY, *argv]), seccomp_fd
    finally:
        os.close(seccomp_fd)


def run_in_sandbox(
    script: str, interpreter: Interpreter | None = None, as_root: bool | None = None
) -> subprocess.CompletedProcess:
    """Run `script` in the sandbox; `as_root=False` while root runs it as nobody (user namespace)."""
    interpreter = interpreter or Interpreter.current()
    as_root = running_as_root() if as_root is None else as_root
    with sandbox_argv(script, interpreter, as_root) as (argv, seccomp_fd):
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, pass_fds=(seccomp_fd,))


@functools.cache
def distro_python() -> Interpreter | None:
    """A Debian-style python3 (with _posixsubprocess compiled in), if this machine has one."""
    for candidate in ("/usr/bin/python3", "/usr/bin/python3.11"):
        if Path(candidate).exists():
            probe = [
                candidate,
                "-I",
                "-S",
                "-c",
                "import sys; print('_posixsubprocess' in sys.builtin_module_names)",
            ]
            if subprocess.run(probe, capture_output=True, text=True).stdout.strip() == "True":
                return Interpreter.at(Path(candidate))
    return None


def unprivileged_interpreter() -> tuple[Interpreter | None, str]:
    """An interpreter a non-root bwrap (user namespace, as nobody) can start, or why there is none."""
    if not running_as_root():
        return Interpreter.current(), ""
    if shutil.which("setpriv") is None:
        return None, "setpriv is not installed (needed to drop from root to nobody)"
    reasons = []
    for interpreter in dict.fromkeys(i for i in (Interpreter.current(), distro_python()) if i is not None):
        # The plainest user-namespace bwrap, not the scorer's: a broken sandbox must fail the
        # tests below, only a host that cannot do this at all skips them.
        bare = [
            "bwrap",
            "--unshare-user",
            "--ro-bind",
            "/",
            "/",
            str(interpreter.executable),
            "-c",
            "print('up')",
        ]
        result = subprocess.run([*NOBODY, *bare], capture_output=True, text=True, timeout=60)
        if result.stdout.strip() == "up":
            return interpreter, ""
        reasons.append(f"{interpreter.executable}: {result.stderr.strip()[-200:]}")
    return (
        None,
        "no non-root sandbox starts here (user namespaces off, or no interpreter nobody can read): "
        + ("; ".join(reasons)),
    )


MODES = [
    pytest.param(
        True, id="root", marks=pytest.mark.skipif(not running_as_root(), reason="not running as root")
    ),
    pytest.param(False, id="user-namespace"),
]


@pytest.fixture(scope="module")
def nonroot() -> Interpreter:
    interpreter, reason = unprivileged_interpreter()
    if interpreter is None:
        pytest.skip(reason)
    return interpreter


def interpreter_for(as_root: bool, request: pytest.FixtureRequest) -> Interpreter:
    return Interpreter.current() if as_root else request.getfixturevalue("nonroot")


# --- 1. mounts: the stdlib and the libraries it links, nothing else ---------------------------------

WALK = """
import json, os, stat
found = []
for top in os.listdir('/'):
    if top in ('proc', 'dev') or os.path.islink('/' + top):  # /lib -> usr/lib is walked as /usr/lib
        continue
    for base, dirs, files in os.walk('/' + top):
        for name in dirs + files:
            path = os.path.join(base, name)
            info = os.lstat(path)
            kind = 'link' if stat.S_ISLNK(info.st_mode) else 'dir' if stat.S_ISDIR(info.st_mode) else 'file'
            found.append((path, kind, info.st_mode & 0o111 != 0))
print(json.dumps(found))
"""


@pytest.mark.parametrize("as_root", MODES)
def test_the_sandbox_holds_the_stdlib_and_its_libraries_only(
    as_root: bool, request: pytest.FixtureRequest
) -> None:
    interpreter = interpreter_for(as_root, request)
    result = run_in_sandbox(WALK, interpreter, as_root)
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    files = [path for path, kind, _ in entries if kind == "file"]
    names = {Path(path).name for path, _, _ in entries}
    # Found the interpreter's stdlib at all (a walk that saw nothing would pass everything below).
    assert any(path.endswith("/json/__init__.py") for path in files)
    assert not [path for path in files if {"site-packages", "dist-packages"} & set(Path(path).parts)]
    assert not names & TOOLS, names & TOOLS
    assert not names & SHELLS, names & SHELLS
    assert not [path for path in names if path.startswith("_cffi_backend")]
    binary = {str(interpreter.executable), *map(str, interpreter.executable.parents)}
    elsewhere = [p for p, _, _ in entries if p not in binary]
    forbidden = ("/usr/bin", "/usr/local", "/usr/lib/gcc", "/usr/lib/python3/", "/usr/share", "/etc")
    assert not [p for p in elsewhere if p.startswith(forbidden)]
    # Exactly what the plan binds: the interpreter, files inside its stdlib dirs, its libraries.
    allowed_dirs = [str(path) for path in interpreter.stdlib_dirs if path.is_dir()]
    allowed_files = {str(at) for at, _ in mount_plan(interpreter).binds}
    stray = [
        path
        for path in files
        if path not in allowed_files and not any(path.startswith(d + "/") for d in allowed_dirs)
    ]
    assert stray == []
    # No program but the interpreter: every other executable ELF file is a shared object.
    executables = [path for path, kind, x in entries if kind == "file" and x and ".so" not in Path(path).name]
    programs = {path for path in executables if Path(path).read_bytes()[:4] == b"\x7fELF"}
    assert programs == {str(interpreter.executable)}


@pytest.mark.parametrize("as_root", MODES)
def test_every_allowed_extension_module_loads_inside(as_root: bool, request: pytest.FixtureRequest) -> None:
    """The libraries bound are enough: each extension module not hidden on purpose imports (or
    fails only for want of a hidden one: _asyncio imports asyncio, which imports subprocess)."""
    interpreter = interpreter_for(as_root, request)
    modules = sorted({path.name.split(".")[0] for path in interpreter.extension_modules()})
    hidden = sorted({path.name.split(".")[0] for path in interpreter.hidden_paths() if path.is_file()})
    assert len(modules) >= 10 and "_posixsubprocess" not in modules
    script = f"""
import importlib
for name in {modules!r}:
    try:
        importlib.import_module(name)
    except ImportError as error:
        if error.name not in {hidden!r}:
            print(name, error)
"""
    result = run_in_sandbox(script, interpreter, as_root)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    parts = {part for library in linked_libraries(interpreter) for part in library.parts}
    assert not {"site-packages", "dist-packages"} & parts


@pytest.mark.parametrize("as_root", MODES)
def test_a_debian_cffi_backend_appended_to_sys_path_is_not_there(
    as_root: bool, request: pytest.FixtureRequest
) -> None:
    """The attack that was found: all of /usr was mounted, so Debian's python3-cffi-backend was one
    sys.path entry away, and with it raw memory."""
    interpreter = interpreter_for(as_root, request)
    script = f"""
import sys
sys.path += {list(FOREIGN_PACKAGE_DIRS)!r}
try:
    import _cffi_backend
    print('imported', _cffi_backend.__file__)
except ImportError:
    print('missing')
"""
    result = run_in_sandbox(script, interpreter, as_root)
    assert result.stdout.strip() == "missing", result.stdout + result.stderr
    # Where Debian's build for this interpreter's ABI is on the host, the same script imports it
    # outside the sandbox: the case is live, not broken.
    suffix = subprocess.run(
        [str(interpreter.executable), "-I", "-S", "-c", SUFFIX], capture_output=True, text=True
    ).stdout.strip()
    if any(Path(d, "_cffi_backend" + suffix).exists() for d in FOREIGN_PACKAGE_DIRS):
        host = subprocess.run(
            [str(interpreter.executable), "-I", "-S", "-c", script], capture_output=True, text=True
        )
        assert host.stdout.startswith("imported"), host.stdout + host.stderr


@pytest.mark.parametrize("as_root", MODES)
def test_honest_stdlib_code_runs(as_root: bool, request: pytest.FixtureRequest) -> None:
    interpreter = interpreter_for(as_root, request)
    script = """
import bisect, collections, dataclasses, datetime, decimal, fractions, functools, hashlib
import heapq, itertools, json, math, random, re, socket, sqlite3, statistics, string, struct
import threading, zlib
assert json.loads(json.dumps({'a': [1, 2]})) == {'a': [1, 2]}
assert re.findall(r'\\d+', 'a1b22') == ['1', '22']
assert collections.Counter('abca').most_common(1) == [('a', 2)]
assert math.isqrt(17) == 4 and list(itertools.accumulate([1, 2, 3])) == [1, 3, 6]
assert functools.reduce(lambda a, b: a * b, range(1, 6)) == 120
assert decimal.Decimal('0.1') + decimal.Decimal('0.2') == decimal.Decimal('0.3')
assert fractions.Fraction(1, 3) * 3 == 1 and statistics.mean([1, 2, 3]) == 2
assert hashlib.sha256(b'x').hexdigest()[:4] == '2d71' and zlib.decompress(zlib.compress(b'z')) == b'z'
assert sqlite3.connect(':memory:').execute('select 1 + 1').fetchone() == (2,)
left, right = socket.socketpair()  # AF_UNIX: what asyncio's event loop takes for its self-pipe
left.send(b'ping')
assert right.recv(4) == b'ping'
results = []
workers = [threading.Thread(target=results.append, args=(n,)) for n in range(4)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
assert sorted(results) == [0, 1, 2, 3]  # threads: clone3 -> ENOSYS -> clone(CLONE_THREAD)
print('ok', datetime.date(2024, 1, 1).isoformat())
"""
    result = run_in_sandbox(script, interpreter, as_root)
    assert result.stdout.split() == ["ok", "2024-01-01"], result.stderr


# --- 2. seccomp, inside the sandbox and at the syscall level -----------------------------------------

CALLS = """
import os, socket, sys
def attempt(name, call):
    try:
        call()
        print(name, 'allowed')
    except OSError as error:
        print(name, error.errno)
attempt('fork', os.fork)
attempt('posix_spawn', lambda: os.posix_spawn(sys.executable, [sys.executable, '-c', 'pass'], {}))
attempt('memfd_create', lambda: os.memfd_create('x'))
fd = os.open(sys.executable, os.O_RDONLY)
attempt('fexecve', lambda: os.execve(fd, [sys.executable, '-c', 'pass'], {}))
for family in ('AF_INET', 'AF_INET6', 'AF_UNIX', 'AF_NETLINK', 'AF_PACKET', 'AF_ALG', 'AF_VSOCK'):
    attempt(family, lambda: socket.socket(getattr(socket, family, 40)))
attempt('socketpair_inet', lambda: socket.socketpair(socket.AF_INET))
attempt('socketpair_unix', lambda: socket.socketpair(socket.AF_UNIX))
"""
CALLS_DENIED = ["fork", "posix_spawn", "memfd_create", "fexecve", "AF_INET", "AF_INET6", "AF_UNIX"]
CALLS_DENIED += ["AF_NETLINK", "AF_PACKET", "AF_ALG", "AF_VSOCK", "socketpair_inet"]


@pytest.mark.parametrize("as_root", MODES)
def test_the_filter_refuses_processes_and_sockets_inside(
    as_root: bool, request: pytest.FixtureRequest
) -> None:
    interpreter = interpreter_for(as_root, request)
    result = run_in_sandbox(CALLS, interpreter, as_root)
    assert result.returncode == 0, result.stderr
    outcome = dict(line.split() for line in result.stdout.splitlines())
    assert {name: outcome[name] for name in CALLS_DENIED} == dict.fromkeys(CALLS_DENIED, str(errno.EPERM))
    assert outcome["socketpair_unix"] == "allowed"


def test_an_exec_keeps_the_filter_and_the_limits() -> None:
    """execve stays allowed (bwrap loads the filter before its own exec of the interpreter): what it
    starts is as confined as the process it replaces."""
    script = """
import os, sys
child = "import os, resource\\ntry:\\n    os.fork()\\nexcept OSError as e:\\n    print('fork', e.errno)\\n"
child += "print('as', resource.getrlimit(resource.RLIMIT_AS)[0] >> 20)"
os.execv(sys.executable, [sys.executable, '-I', '-S', '-c', child])
"""
    result = run_in_sandbox(script)
    assert result.stdout.split() == ["fork", "1", "as", str(LIMITS.memory_mb)], result.stderr


@pytest.mark.skipif(distro_python() is None, reason="no distro python3 with _posixsubprocess built in")
def test_posixsubprocess_through_create_builtin_on_a_distro_python_is_refused() -> None:
    """On Debian's python3, _posixsubprocess is compiled in (no file to hide), and
    `_imp.create_builtin` makes it without an import statement: its fork_exec runs into the filter.
    (The scorer also refuses such an interpreter; this is the layer under that refusal.)"""
    interpreter = distro_python()
    assert interpreter is not None
    script = """
import _imp, importlib.machinery, sys
spec = importlib.machinery.ModuleSpec('_posixsubprocess', None)
sys.modules['_posixsubprocess'] = _imp.create_builtin(spec)
import subprocess  # its fork_exec is the module made above
try:
    subprocess.run([sys.executable, '-c', 'pass'])
    print('spawned')
except OSError as error:
    print(error.errno)
"""
    result = run_in_sandbox(script, interpreter)
    assert result.stdout.split() == [str(errno.EPERM)], result.stderr
    # Outside the sandbox the same script spawns: the refusal above is the filter's.
    host = subprocess.run(
        [str(interpreter.executable), "-I", "-S", "-c", script], capture_output=True, text=True
    )
    assert host.stdout.split() == ["spawned"], host.stderr


# Loads the program into this very process (no bwrap, no audit hook), then makes raw syscalls.
RAW_SYSCALLS = """
import ctypes, json, os, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
nr = json.loads(sys.argv[1])
skip = json.loads(sys.argv[2])
program = sys.stdin.buffer.read()
if program:
    class Fprog(ctypes.Structure):
        _fields_ = [('len', ctypes.c_ushort), ('filter', ctypes.c_void_p)]
    code = ctypes.create_string_buffer(program, len(program))
    fprog = Fprog(len(program) // 8, ctypes.cast(code, ctypes.c_void_p))
    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    assert libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0, ctypes.get_errno()  # SECCOMP_MODE_FILTER
buf = ctypes.create_string_buffer(64)
iov = (ctypes.c_void_p * 2)(ctypes.cast(buf, ctypes.c_void_p), 8)
clone_args = ctypes.create_string_buffer(88)
results = {}
last = [0]
def call(name, *args):
    if nr.get(name, -1) < 0 or name in skip:
        return
    ctypes.set_errno(0)
    args = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    value = libc.syscall(ctypes.c_long(nr[name]), *args)
    if value == 0 and name in ('fork', 'vfork', 'clone', 'clone3'):
        os._exit(0)  # the child of a call that should have been refused
    results[name] = -ctypes.get_errno() if value == -1 else 'ok'
    last[:] = [value]
    return None if value == -1 else value
call('fork')
call('vfork')
call('clone', 17, 0, 0, 0, 0)  # SIGCHLD: a new process
call('clone3', clone_args, 88)
call('execveat', -1, b'', 0, 0, 0x1000)
call('memfd_create', b'x', 0)
call('ptrace', 16, 0x7FFFFFFF, 0, 0)  # PTRACE_ATTACH to no process: ESRCH unfiltered
call('process_vm_readv', os.getpid(), iov, 1, iov, 1, 0)
call('process_vm_writev', os.getpid(), iov, 1, iov, 1, 0)
call('kcmp', os.getpid(), os.getpid(), 0, 0, 0)
call('pidfd_getfd', -1, 0, 0)
call('socket', 1, 1, 0)  # AF_UNIX
call('socket_vsock', 40, 1, 0)
call('socketpair', 2, 1, 0, buf)  # AF_INET: EOPNOTSUPP unfiltered
call('connect', -1, 0, 0)
call('bind', -1, 0, 0)
call('io_uring_setup', 1, buf)
call('userfaultfd', 0)
# IPC objects outlive the process: a call the filter should have refused is undone at once.
if call('shmget', 0, 1 << 20, 0o1600) is not None:  # IPC_PRIVATE, IPC_CREAT | 0600
    libc.syscall(ctypes.c_long(nr['shmctl']), ctypes.c_long(last[0]), 0, 0)  # IPC_RMID
if call('msgget', 0, 0o1600) is not None:
    libc.syscall(ctypes.c_long(nr['msgctl']), ctypes.c_long(last[0]), 0, 0)
if call('mq_open', b'tandem-sandbox-test', 0o100, 0o600, 0) is not None:  # O_CREAT
    libc.syscall(ctypes.c_long(nr['mq_unlink']), b'tandem-sandbox-test')
call('bpf', 0, 0, 0)
call('getpid')
call('unshare', 0x10000000)  # CLONE_NEWUSER (last: it changes what follows)
done = []
worker = threading.Thread(target=done.append, args=(1,))
worker.start(); worker.join()
results['thread'] = 'ok' if done == [1] else 'failed'
print(json.dumps(results))
"""
EPERM, ENOSYS = -errno.EPERM, -errno.ENOSYS
FILTERED = {
    "fork": EPERM,
    "vfork": EPERM,
    "clone": EPERM,
    "clone3": ENOSYS,  # so glibc falls back to clone, where CLONE_THREAD is checked
    "execveat": EPERM,
    "memfd_create": EPERM,
    "ptrace": EPERM,
    "process_vm_readv": EPERM,
    "process_vm_writev": EPERM,
    "kcmp": EPERM,
    "pidfd_getfd": EPERM,
    "socket": EPERM,
    "socket_vsock": EPERM,
    "socketpair": EPERM,
    "connect": EPERM,
    "bind": EPERM,
    "io_uring_setup": EPERM,
    "unshare": EPERM,
    "userfaultfd": EPERM,
    "shmget": EPERM,
    "msgget": EPERM,
    "mq_open": EPERM,
    "bpf": EPERM,
    "getpid": "ok",
    "thread": "ok",
}


def raw_syscalls(program: bytes, skip: tuple[str, ...] = ()) -> dict[str, object]:
    native = pyseccomp.Arch.NATIVE
    numbers = {name: pyseccomp.resolve_syscall(native, name.partition("_vsock")[0]) for name in FILTERED}
    numbers.pop("thread")
    numbers |= {name: pyseccomp.resolve_syscall(native, name) for name in ("shmctl", "msgctl", "mq_unlink")}
    result = subprocess.run(
        [sys.executable, "-I", "-c", RAW_SYSCALLS, json.dumps(numbers), json.dumps(skip)],
        input=program,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def test_the_filter_refuses_each_call_at_the_syscall_level() -> None:
    filtered = raw_syscalls(seccomp.filter_program())
    assert filtered == {name: value for name, value in FILTERED.items() if name in filtered}
    assert {"clone", "clone3", "ptrace", "process_vm_readv", "socket", "execveat"} <= filtered.keys()
    # The same calls without the filter: each answer above is the filter's, not the kernel's.
    # (vfork is left out there: a vfork child returning into Python would corrupt its parent.)
    unfiltered = raw_syscalls(b"", skip=("vfork",))
    changed = {name for name in unfiltered if filtered[name] != unfiltered[name]}
    # (Only calls that any host allows unfiltered: a container's own filter may already refuse
    # clone3, unshare or kcmp.)
    assert {"clone", "ptrace", "process_vm_readv", "memfd_create", "socket", "shmget"} <= changed
    assert unfiltered["thread"] == filtered["thread"] == "ok"


def test_the_filter_is_built_once() -> None:
    seccomp.filter_program()
    hits = seccomp.filter_program.cache_info().hits
    SandboxCommand.bwrap(Interpreter.current(), running_as_root())
    assert seccomp.filter_program.cache_info().hits == hits + 1
    assert seccomp.filter_program.cache_info().misses == 1


def test_without_seccomp_the_scorer_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable() -> bytes:
        raise seccomp.SeccompUnavailableError("no libseccomp here")

    monkeypatch.setattr(runner, "filter_program", unavailable)
    with pytest.raises(SandboxUnavailableError, match="no libseccomp here"):
        UnitTestsScorer(UnitTestsScorerConfig(name="unit_tests"))


def test_the_mount_list_ignores_a_preload_the_server_process_carries(monkeypatch: pytest.MonkeyPatch) -> None:
    # vLLM's CPU engine leaves LD_PRELOAD (torch's libgomp) in the environment of the process that
    # ran it; the embedded reward server lives in such a process. ldd honours LD_PRELOAD, and the
    # sandbox (started with a cleared environment) needs none of it: nothing outside the
    # interpreter's own libraries may be mounted because of it.
    interpreter = Interpreter.current()
    # torch's CPU wheel (which vLLM's CPU build requires) ships its own libgomp inside the venv.
    extra = next(Path(sys.prefix).rglob("libgomp*.so*"), None)
    assert extra is not None, "the test needs a libgomp inside the venv to preload"
    monkeypatch.setenv("LD_PRELOAD", str(extra))
    monkeypatch.setenv("LD_LIBRARY_PATH", str(extra.parent))
    linked_libraries.cache_clear()
    try:
        libraries = linked_libraries(interpreter)
    finally:
        linked_libraries.cache_clear()
    assert not [path for path in libraries if path.is_relative_to(sys.prefix)], libraries


def test_the_mount_list_is_computed_once_per_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    interpreter = Interpreter.current()
    mount_plan(interpreter)
    calls: list[object] = []
    real_run = subprocess.run

    def counting(*args: object, **kwargs: object) -> subprocess.CompletedProcess:
        calls.append(args[0])
        return real_run(*args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(subprocess, "run", counting)
    SandboxCommand.bwrap(interpreter, running_as_root())
    SandboxCommand.bwrap(interpreter, running_as_root())
    assert calls == []  # no ldd, no layout query: both are cached with the interpreter


# --- 3. memory: /dev, /dev/shm, /tmp and the address space -------------------------------------------

FILL = """
import mmap, os
def fill(path, size=150 << 20):
    written = 0
    try:
        with open(path, 'wb') as sink:
            chunk = b'x' * (1 << 20)
            while written < size:
                written += sink.write(chunk)
                sink.flush()
    except OSError as error:
        return 'refused-' + str(written >> 20)
    return 'wrote-' + str(written >> 20)
print('dev_shm', fill('/dev/shm/fill'))
print('dev', fill('/dev/fill'))
print('root', fill('/fill'))
print('tmp', fill('/tmp/fill'))
os.unlink('/tmp/fill')
try:
    hoard = bytearray({memory} << 20)
    print('heap', 'allocated')
except MemoryError:
    print('heap', 'refused')
try:
    mmap.mmap(-1, {memory} << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    print('mmap', 'allocated')
except OSError:
    print('mmap', 'refused')
"""


@pytest.mark.parametrize("as_root", MODES)
def test_memory_cannot_hide_in_dev_shm_tmp_or_past_the_limit(
    as_root: bool, request: pytest.FixtureRequest
) -> None:
    interpreter = interpreter_for(as_root, request)
    result = run_in_sandbox(FILL.format(memory=LIMITS.memory_mb), interpreter, as_root)
    assert result.returncode == 0, result.stderr
    outcome = dict(line.split() for line in result.stdout.splitlines())
    assert outcome["dev_shm"] == outcome["dev"] == outcome["root"] == "refused-0"
    # /tmp is the one writable place, and it stops at its size (ENOSPC, or EFBIG at RLIMIT_FSIZE).
    assert outcome["tmp"] == f"refused-{TMP_BYTES >> 20}"
    assert outcome["heap"] == outcome["mmap"] == "refused"


# --- 4. hostile completions through the scorer (harness + isolation): none may pass -------------------

HOSTILE = {
    "cffi_backend_from_dist_packages": f"""
import sys
sys.path += {list(FOREIGN_PACKAGE_DIRS)!r}
def f(x):
    import _cffi_backend
    return 7
""",
    "fill_dev_shm": """
def f(x):
    with open('/dev/shm/hoard', 'wb') as sink:
        for _ in range(150):
            sink.write(b'x' * (1 << 20))
    return 7
""",
    "fill_dev": """
def f(x):
    with open('/dev/hoard', 'wb') as sink:
        sink.write(b'x' * (150 << 20))
    return 7
""",
    "posix_spawn": """
import os, sys
def f(x):
    os.posix_spawn(sys.executable, [sys.executable, '-c', 'pass'], {})
    return 7
""",
    "vsock_to_the_host": """
import socket
def f(x):
    socket.socket(40, socket.SOCK_STREAM)  # AF_VSOCK: not bounded by the network namespace
    return 7
""",
    "unix_socket": """
import socket
def f(x):
    socket.socket(socket.AF_UNIX).connect('\\0anything')
    return 7
""",
}
# Honest code the harness runs today (it refuses `threading` and `asyncio` imports itself, for its
# own reasons: the raw tests above show the isolation layer allows both).
HONEST = [
    "def f(x):\n    return 3 * x + 1\n",
    "import math\ndef f(x):\n    return math.isqrt(9 * x * x) + 1\n",
    "from collections import Counter\ndef f(x):\n    return Counter('aab')['a'] * 3 + 1\n",
]


def score_all(scorer: UnitTestsScorer, completions: list[str]) -> list[float | None]:
    items = [ScoreItem(prompt="", completion=code, tests=["assert f(2) == 7"]) for code in completions]
    return [result.score for result in asyncio.run(scorer.score(items))]


def test_hostile_isolation_cases_score_zero_and_honest_code_one() -> None:
    config = UnitTestsScorerConfig(name="unit_tests", timeout_s=10.0, prepend_prompt=False, max_concurrency=2)
    scores = score_all(UnitTestsScorer(config), [*HOSTILE.values(), *HONEST])
    assert dict(zip(HOSTILE, scores, strict=False)) == dict.fromkeys(HOSTILE, 0.0)
    assert scores[len(HOSTILE) :] == [1.0] * len(HONEST)
