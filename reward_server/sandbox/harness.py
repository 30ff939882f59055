"""The in-sandbox runner: runs one completion and ONE test, and proves the test ran to its end.

Started as `python -I -S -u -c <this file's source> <ctl_fd> <uid>` inside bubblewrap (see bwrap.py),
reading a marshal payload `(user_src, test_src, user_token, nonce, rlimits)` on ctl_fd up to EOF;
the verdict goes back on the same socket. It never imports the project: the scorer sends this
file's text, so nothing of the repository is mounted.

Steps (the threat model is in sandbox/__init__.py):
1. read the payload, drop to the run's uid, set the rlimits, close stray fds;
2. compile the user code with `os.write(ctl, user_token)` appended, and the test with
   `os.write(ctl, nonce)` appended: the verdict is written by the *test's own last statement*;
3. install the audit guard, write READY on ctl, run the user code, then the test, each in a fresh
   thread started on C callables only, so the bottom of that thread's stack is user code and no
   frame of this runner (whose locals hold the nonce) is reachable through `f_back`; the test
   runs with a copy of the builtins taken before user code, so patched builtins do not reach it;
4. wait for every thread to finish and `os._exit`, touching no user object from this thread
   (a dict lookup on `ns` could call a user `__eq__` here, a flush could call a user `sys.stdout`).

The scorer passes only when ctl carries exactly READY + user_token + nonce.
"""

import _collections
import _operator
import _signal
import _thread
import builtins
import itertools
import marshal
import os
import sys
import time

READY = b"R"
# Extension modules that reach around the guard: raw memory (ctypes), unaudited process creation
# (_posixsubprocess.fork_exec), pending calls and tracing back doors (_test*), subinterpreters.
DENIED_MODULES = frozenset(
    {"ctypes", "_ctypes", "_posixsubprocess", "_xxsubinterpreters", "_xxtestfuzz", "_lsprof"}
)
DENIED_EVENTS = frozenset(
    {
        "sys.addaudithook",  # a later hook cannot undo a denial, but nothing legitimate needs one
        "sys.settrace",  # a trace function can jump over `assert` lines (frame.f_lineno)
        "sys.setprofile",
        "sys._current_frames",  # the runner's own frame, whose locals hold the nonce
        "sys._current_exceptions",
        "gc.get_objects",  # the test's code object (and its nonce constant) is on the heap
        "gc.get_referrers",
        "gc.get_referents",
        "os.fork",  # a child keeps a copy of the heap and may exec an unguarded interpreter
        "os.forkpty",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.system",
        "subprocess.Popen",
        "os.symlink",  # a link to /proc/self/mem would dodge the "mem" path check below
        "os.link",
    }
)


def _install_guard() -> None:
    """Deny, for the rest of the process, the introspection that could read or skip to the nonce.

    Every name the hook uses is bound as a default argument: user code may rebind builtins, but
    it cannot reach this function (audit hooks cannot be listed) or its defaults.
    """

    def guard(
        event: str,
        args: tuple,
        _events: frozenset = DENIED_EVENTS,
        _modules: frozenset = DENIED_MODULES,
        _type: type = type,
        _str: type = str,
        _bytes: type = bytes,
        _int: type = int,
        _error: type = PermissionError,
    ) -> None:
        if event in _events or event.startswith("ctypes."):
            raise _error("sandbox: " + event + " is not allowed")
        # User code can raise any event itself (sys.audit) with objects of its own: only exact
        # str arguments are compared, so no user __eq__ or method runs inside this hook.
        if event == "object.__getattr__" and _type(args[1]) is _str and args[1] == "f_code":
            # frame.f_code -> co_consts is where the test's nonce lives while it runs.
            raise _error("sandbox: frame.f_code is not allowed")
        if event == "import" and _type(args[0]) is _str:
            top = args[0].partition(".")[0]
            if top in _modules or top.startswith("_test"):
                raise _error("sandbox: import of " + top + " is not allowed")
        if event == "open":
            path = args[0]
            kind = _type(path)
            if kind is _int:
                return
            if kind is _bytes:
                path = path.decode("utf-8", "surrogateescape")
            elif kind is not _str:
                # A PathLike may answer differently when io re-reads it (check vs use).
                raise _error("sandbox: open() takes str or bytes paths here")
            if "mem" in path.split("/"):
                raise _error("sandbox: process memory is not readable")

    sys.addaudithook(guard)


def _read_payload(ctl_fd: int) -> bytes:
    """The payload, up to the EOF the scorer leaves by shutting down its writing side."""
    chunks = []
    while chunk := os.read(ctl_fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _confine(uid: int, ctl_fd: int, rlimits: list[tuple[str, int, int]]) -> None:
    """Drop to the run's uid and apply the rlimits before any user byte runs."""
    import resource

    if uid >= 0:
        # Root-mode sandboxes start as root with only CAP_SETUID/CAP_SETGID; the run's own uid clears
        # those and makes RLIMIT_NPROC count this sandbox alone (the kernel never applies it to uid 0).
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    for name, soft, hard in rlimits:
        resource.setrlimit(getattr(resource, name), (soft, hard))
    os.closerange(3, ctl_fd)
    os.closerange(ctl_fd + 1, 1 << 16)
    # SIGINT's default handler raises in the main thread; user threads cannot install handlers
    # (only the main thread may), so ignoring it leaves no way to run code on this thread.
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)


def _report_line(ctl_fd: int, token: bytes) -> str:
    return "\n\n__import__('os').write(" + str(ctl_fd) + ", " + repr(token) + ")\n"


def _job(*calls: tuple) -> tuple[object, tuple, object]:
    """A thread body made of C callables only: release `started`, then each `(function, *args)`.

    `deque(starmap(call, ...), maxlen=0)` runs the calls in C: with no Python frame under the
    user code, `f_back` ends in user code. `started` closes a race: a new thread counts in
    `_thread._count()` only once it runs.
    """
    started = _thread.allocate_lock()
    started.acquire()
    steps = itertools.starmap(_operator.call, [(started.release,), *calls])
    return _collections.deque, (steps, 0), started


def _prepare() -> tuple[int, tuple, tuple]:
    """Everything before user code; failures here are the sandbox's, printed with a traceback."""
    ctl_fd, uid = int(sys.argv[1]), int(sys.argv[2])
    user_src, test_src, user_token, nonce, rlimits = marshal.loads(_read_payload(ctl_fd))
    _confine(uid, ctl_fd, rlimits)
    # The completion is compiled in its own thread (exec of a string): its SyntaxError is its fail.
    user_code = user_src + _report_line(ctl_fd, user_token)
    test_code = compile(test_src + _report_line(ctl_fd, nonce), "<test>", "exec")
    ns = {"__name__": "completion", "__builtins__": dict(builtins.__dict__)}
    # The test shares the completion's globals (it calls its functions) but gets builtins copied
    # now, before user code: `builtins.len = ...` or `__builtins__['abs'] = ...` changes the
    # completion's own lookups, not the test's (functions keep the builtins they were made with).
    test_builtins = dict(builtins.__dict__)
    user_job = _job((exec, user_code, ns))
    test_job = _job((ns.__setitem__, "__builtins__", test_builtins), (exec, test_code, ns))
    return ctl_fd, user_job, test_job


def main() -> None:
    try:
        ctl_fd, user_job, test_job = _prepare()
    except Exception:
        import traceback

        traceback.print_exc()
        os._exit(2)
    # From here on this thread names only locals bound now: user code may rebind any global or
    # builtin, and reaching this frame would hand it the test's code object (and so the nonce).
    # Nothing is allocated after user code runs either, so no garbage collection (and no user
    # __del__) can start on this thread.
    start, running, sleep, exit_ = _thread.start_new_thread, _thread._count, time.sleep, os._exit
    _install_guard()
    os.write(ctl_fd, READY)
    for body, args, started in (user_job, test_job):
        start(body, args)
        started.acquire()
        while running():
            sleep(0.0002)
    exit_(0)


def _entry(_main=main, _exit=os._exit) -> None:
    # A failure after user code ran (e.g. no thread left to start) must exit without printing:
    # printing goes through sys.stderr / sys.excepthook, which user code may have replaced.
    try:
        _main()
    except BaseException:
        _exit(3)


if __name__ == "__main__":
    _entry()
