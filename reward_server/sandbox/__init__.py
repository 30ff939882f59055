"""The sandbox for untrusted completions: bubblewrap isolation plus a harness whose verdict cannot be forged.

Threat model. The completion is adversarial code written by a policy being optimised against this
reward. It may try to (a) harm or read the host, (b) starve the server, or (c) fake a pass.

(a) Host. bwrap (bwrap.py): new net/pid/ipc/uts/cgroup namespaces, read-only /usr and interpreter
    prefix, nothing else of the host (no /etc, /root, /home, /work: not the server's config, not
    /etc/shadow, not the repository), private size-capped /tmp, cleared environment, new session,
    --die-with-parent, no capabilities; as root the harness drops to a random uid of its own.
(b) Resources. rlimits set by the harness before user code (CPU time, address space, processes,
    file size, open files, no core dumps); the wall clock, an output cap and the kill of the whole
    process group are enforced by the parent (runner.py), and every kill is counted.
(c) Verdict. The run passes only when the verdict socket (an inherited fd, not stdout) carries
    READY + user_token + nonce, both fresh per run. The token is written by a statement appended
    to the completion, the nonce by a statement appended to the test: so the pass is written by the
    test's own last line, reached only if the test ran to its end. Exit status, stdout markers,
    `exit(0)`, `os._exit`, killed parents, closed stdout and atexit/__del__ tricks never produce
    it. The test runs in a fresh thread started on C callables (harness._job), so user frames walk
    back (`f_back`) only to user code; the harness thread, whose locals hold the test's code
    object, touches no user object once user code runs. An audit hook, installed before user code
    and unreachable from it, denies what could read the nonce or skip the test: frame.f_code (the
    constants), sys.settrace/setprofile (jumping over `assert` lines), gc.get_objects/referrers,
    sys._current_frames, /proc/*/mem, ctypes, fork/exec/spawn (an unguarded child), new audit
    hooks; the ctypes, _posixsubprocess and _test* extension files are also hidden from the
    sandbox. `assert` raises the real AssertionError whatever user code rebinds (3.9+ bytecode),
    and the test runs with builtins copied before user code, so patched builtins do not reach it.

Out of scope, by design: semantic cheats that make the test's own expressions true, e.g. returning
an object whose __eq__ is always True, or shadowing a name the test uses (a global `sorted`, a
patched module in sys.modules). Tests that care should compare exact types (`type(r) is int and
r == 7`). Also out of scope: crafted bytecode (`code.replace`, `marshal.loads`, both needed by
ordinary imports) can corrupt the interpreter's memory and so could forge (c), though not escape
(a) or (b). Python code that needs frame.f_code (logging's caller lookup, traceback formatting in
user code, inspect), subprocesses or third-party packages (site-packages is hidden) fails inside.
"""

from reward_server.sandbox.bwrap import Interpreter, Limits
from reward_server.sandbox.runner import KillReason, RunOutcome, SandboxCommand, run_test

__all__ = ["Interpreter", "KillReason", "Limits", "RunOutcome", "SandboxCommand", "run_test"]
