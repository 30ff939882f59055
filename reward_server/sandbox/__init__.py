"""The sandbox for untrusted completions: bubblewrap isolation plus a harness whose verdict cannot be forged.

Threat model. The completion is adversarial code written by a policy being optimised against this
reward. It may try to (a) harm or read the host, (b) starve the server, or (c) fake a pass.

(a) Host. bwrap (bwrap.py): new net/pid/ipc/uts/cgroup namespaces; read-only binds of the
    interpreter binary, its standard library (site-/dist-packages hidden) and the shared libraries
    it links (from ldd, once per interpreter), and nothing else of the host: no rest of /usr (no
    other Python's packages, no compilers, no shell), no /etc, /root, /home, /work (not the
    server's config, not /etc/shadow, not the repository); a read-only root and /dev, a private
    size-capped /tmp, cleared environment, new session, --die-with-parent, no capabilities; as
    root the harness drops to a random uid of its own. A seccomp filter (seccomp.py), loaded by
    bwrap, holds even against native code: no second process (fork, vfork, clone without
    CLONE_THREAD; clone3 answers ENOSYS so threads fall back to clone), no ptrace or
    process_vm_*, no sockets (only AF_UNIX socketpairs), no io_uring, mounts, namespaces or bpf.
    execve stays allowed (bwrap loads the filter before its own exec of the interpreter), which is
    sound because the exec'd image replaces the only process holding the nonce.
(b) Resources. rlimits set by the harness before user code (CPU time, address space and data,
    processes and threads, file size, open files, no core dumps); memory outside the address
    space is bounded by /tmp's size, the read-only / and /dev (so /dev/shm), and the filter (no
    memfd, no System V IPC or message queues); the wall clock, an output cap and the kill of the
    whole process group are enforced by the parent (runner.py), and every kill is counted.
    docs/sandbox.md lists each promise and the test that holds it.
(c) Verdict (harness.py, dialect.py; docs/sandbox.md has the dialect and the threat entries).
    The run passes only when the verdict socket (an inherited fd, not stdout) carries READY +
    user_token + nonce, both fresh per run: READY is written before user code, the token by a
    statement appended to the completion, the nonce by `__tandem_done(nonce)`, the last statement
    of the test's own body (the nonce is a constant of the test's code, which is never exposed).
    Exit status, stdout markers, `exit(0)`, `os._exit`, killed parents, closed stdout and
    atexit/__del__ tricks never produce it. The test is checked against the test
    dialect and rewritten on the server, so that every comparison and truth test goes through the
    harness's strict functions (exact builtins only, compared as private copies by the builtin
    types' C code; anything else fails the test) and no method of the completion's objects decides
    it: an object that equals everything scores 0. The completion's callables run on a separate
    worker thread, never on the test's; the test has its own globals, builtins copied before user
    code, and the namespaces of its imports as they were before user code. An audit hook, installed
    before user code and unreachable from it, denies what could reach the test's frame, code or
    helpers, or skip the test: frame.f_code, tb_frame/gi_frame/cr_frame/ag_frame, sys._getframe on
    the test's thread, sys.settrace/setprofile (3.12's *allthreads variants too),
    sys.monitoring.register_callback, gc.get_objects/referrers/referents, sys._current_frames,
    /proc/*/mem, ctypes, fork/exec/spawn, new audit hooks. The scorer refuses an interpreter with a
    denied module compiled in (`_imp.create_builtin` would load it unaudited). A sandbox that
    cannot start its threads (before any user code) is an item error, not a 0.

Not promised (docs/sandbox.md lists each): that a value came from a particular method (builtins
and operators on the completion's objects run its methods on the worker; what they return is
judged strictly); crafted bytecode (`code.replace`, `marshal.loads`, both needed by ordinary
imports) can corrupt the interpreter's memory and so could forge (c), though not escape (a) or
(b). Python code that needs frame.f_code or other frames (logging's caller lookup, traceback
formatting in user code, inspect), subprocesses or third-party packages (site-packages is hidden)
fails inside.
"""

from reward_server.sandbox.bwrap import Interpreter, Limits
from reward_server.sandbox.runner import KillReason, RunOutcome, SandboxCommand, run_test

__all__ = ["Interpreter", "KillReason", "Limits", "RunOutcome", "SandboxCommand", "run_test"]
