"""Run one (completion, test) pair in the sandbox from asyncio and read back an unforgeable verdict.

The verdict channel is a socketpair whose far end the harness inherits as `ctl_fd`: the payload
goes in on it (then our side shuts down writing), the verdict comes back. The run passed only if
the channel carries exactly READY + user_token + nonce: READY (written before user code), the user
token (written by the last statement of the completion) and the nonce (written by the last
statement of the test). Both secrets are fresh per run; stdout and the exit status are never
consulted for the verdict. A channel holding exactly THREADS_FAILED means the harness could not
start its threads, before any user code: the run is not judged (the scorer reports an error).

The process is watched with plain event-loop callbacks (a pidfd for its exit, its stdout pipe, a
timer) rather than asyncio's subprocess transport: on Python 3.11 a task cancelled while that
transport connects its pipes waits forever, and a request deadline cancels scorers at any moment.
"""

import asyncio
import contextlib
import marshal
import os
import secrets
import signal
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from reward_server.sandbox.bwrap import Interpreter, Limits, bwrap_argv, harness_argv, run_uid
from reward_server.sandbox.dialect import PreparedTest, prepare_test
from reward_server.sandbox.seccomp import filter_program, program_fd

# timeout: the wall clock ran out; output_limit: more than max_output_bytes printed; cpu_limit:
# SIGXCPU from RLIMIT_CPU; signal: any other signal (a segfault, SIGKILL at the hard CPU limit).
KillReason = Literal["timeout", "output_limit", "cpu_limit", "signal"]
HARNESS_SOURCE = (Path(__file__).parent / "harness.py").read_text()
READY = b"R"  # same constant as harness.READY (the harness is sent as text, never imported)
THREADS_FAILED = b"E"  # harness.THREADS_FAILED: a thread could not start, before any user code


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What one sandboxed test run produced.

    passed: the verdict channel carried exactly READY + user token + nonce.
    threads_failed: the harness could not start its threads (RLIMIT_NPROC too low); no user
        code ran, so `started` is False too.
    started: the harness reached user code (False: the sandbox itself failed, or was killed
        before user code ran, so the completion cannot be blamed).
    killed: why the parent killed the run or the kernel killed it by signal, if it did.
    output: stdout and stderr together, at most max_output_bytes (for error messages).
    """

    passed: bool
    started: bool
    killed: KillReason | None
    returncode: int | None
    output: bytes
    threads_failed: bool = False


@dataclass(frozen=True, slots=True)
class SandboxCommand:
    """How to start a harness: bwrap options (empty for `sandbox: none`), the interpreter, and
    whether bwrap loads the seccomp filter (always with bwrap; built once, when the command is)."""

    prefix: tuple[str, ...]
    interpreter: Interpreter
    as_root: bool
    seccomp: bool = False

    @classmethod
    def bwrap(cls, interpreter: Interpreter, as_root: bool) -> "SandboxCommand":
        filter_program()  # fail now (SeccompUnavailableError), not on every run
        return cls(tuple(bwrap_argv(interpreter, as_root)), interpreter, as_root, seccomp=True)

    @classmethod
    def unsandboxed(cls, interpreter: Interpreter) -> "SandboxCommand":
        return cls((), interpreter, as_root=False)

    def argv(self, ctl_fd: int, uid: int, seccomp_fd: int | None = None) -> list[str]:
        """The full command line; `uid` is the run's uid in root mode, -1 to keep the caller's;
        `seccomp_fd` (required when `seccomp`) is where bwrap reads the filter program."""
        return [*self.options(seccomp_fd), *harness_argv(self.interpreter, HARNESS_SOURCE, ctl_fd, uid)]

    def options(self, seccomp_fd: int | None) -> list[str]:
        """bwrap and its options, `--seccomp FD` included: everything before the interpreter."""
        if not self.seccomp:
            return list(self.prefix)
        if seccomp_fd is None:
            raise ValueError("a sandbox command needs the fd of its seccomp program")
        return [*self.prefix, "--seccomp", str(seccomp_fd)]

    def run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        """Run the interpreter with `args` in this sandbox, outside the harness (start-up probes)."""
        seccomp_fd = program_fd() if self.seccomp else None
        try:
            argv = [*self.options(seccomp_fd), str(self.interpreter.executable), *args]
            fds = () if seccomp_fd is None else (seccomp_fd,)
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, pass_fds=fds)
        finally:
            if seccomp_fd is not None:
                os.close(seccomp_fd)


async def run_test(
    command: SandboxCommand,
    code: str,
    test: PreparedTest | str,
    limits: Limits,
    on_kill: Callable[[KillReason], None] | None = None,
) -> RunOutcome:
    """Run `code` then `test` in a fresh sandbox and wait for it; `on_kill(reason)` on a kill.

    `test` is a dialect.prepare_test result, or test source to prepare here (DialectError if
    it is outside the test dialect). Cancelling the call kills the sandbox: a request deadline must
    not leave a run behind.
    """
    user_token, nonce = secrets.token_hex(16).encode(), secrets.token_hex(16).encode()
    prepared = prepare_test(test) if isinstance(test, str) else test  # DialectError if outside it
    payload = marshal.dumps(
        (code, prepared.source, list(prepared.modules), user_token, nonce, limits.rlimits())
    )
    uid = run_uid() if command.as_root else -1
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with parent:
        # bwrap reads the filter from its own copy of this fd; ours is closed once it has started.
        seccomp_fd = program_fd() if command.seccomp else None
        try:
            with child:
                fds = (child.fileno(),) if seccomp_fd is None else (child.fileno(), seccomp_fd)
                proc = subprocess.Popen(
                    command.argv(child.fileno(), uid, seccomp_fd),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    pass_fds=fds,
                    start_new_session=True,  # one process group to kill: bwrap and all it started
                )
        finally:
            if seccomp_fd is not None:
                os.close(seccomp_fd)
        watch: _Watch | None = None
        try:
            watch = _Watch(proc, parent, payload, limits)
            await watch.done
        finally:
            if watch is not None:
                watch.close()
            proc.stdout.close()  # type: ignore[union-attr]
            if proc.poll() is None:
                # Cancelled (or the watch failed): kill it. The wait is for our direct child (bwrap,
                # or the unsandboxed harness) after SIGKILL, so it returns at once.
                _kill_group(proc.pid)
                proc.wait()
        assert watch is not None  # the try block above returned normally
        killed = watch.killed or _killed_by_signal(proc.returncode)
        channel = _drain(parent)
    if killed is not None and on_kill is not None:
        on_kill(killed)
    passed = killed is None and channel == READY + user_token + nonce
    output = bytes(watch.output[: limits.max_output_bytes])
    threads_failed = killed is None and channel == THREADS_FAILED
    return RunOutcome(passed, channel.startswith(READY), killed, proc.returncode, output, threads_failed)


class _Watch:
    """Event-loop callbacks for one sandbox process: feed the payload, collect output up to the
    cap, notice the exit, enforce the wall clock. `done` resolves once the process has exited and
    its output is read to the end (or it was killed: then what is unread is dropped)."""

    def __init__(
        self, proc: subprocess.Popen, channel: socket.socket, payload: bytes, limits: Limits
    ) -> None:
        assert proc.stdout is not None
        self._proc, self._channel, self._payload = proc, channel, memoryview(payload)
        self._stdout, self._pidfd = proc.stdout.fileno(), os.pidfd_open(proc.pid)
        self._max_output = limits.max_output_bytes
        self._loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self._loop.create_future()
        self.output = bytearray()
        self.killed: KillReason | None = None
        self._exited = self._eof = False
        os.set_blocking(self._stdout, False)
        channel.setblocking(False)
        # Most payloads fit the socket buffer: sent now, the harness need not wait for a loop turn.
        self._send_payload()
        if self._payload:
            self._loop.add_writer(channel, self._send_payload)
        self._loop.add_reader(self._stdout, self._on_output)
        self._loop.add_reader(self._pidfd, self._on_exit)
        self._timer = self._loop.call_later(limits.timeout_s, self.kill, "timeout")

    def kill(self, reason: KillReason) -> None:
        if reason == "timeout" and self._exited:
            # Our child finished in time and only its output is awaited: stop waiting rather than
            # call it killed (with `sandbox: none` an escaped child could hold stdout open).
            self._eof = True
        elif self.killed is None:
            # Output over the cap counts even if the process has already exited (not yet reaped,
            # so its process group id is still its own): the verdict must not depend on timing.
            self.killed = reason
            _kill_group(self._proc.pid)
        self._settle()

    def close(self) -> None:
        """Stop watching (the caller reaps the process, or kills it if the call was cancelled)."""
        self._timer.cancel()
        for remove, fd in [
            (self._loop.remove_writer, self._channel.fileno()),
            (self._loop.remove_reader, self._stdout),
            (self._loop.remove_reader, self._pidfd),
        ]:
            remove(fd)
        os.close(self._pidfd)

    def _send_payload(self) -> None:
        try:
            sent = self._channel.send(self._payload[: 1 << 16])
        except BlockingIOError:
            return
        except OSError:  # the sandbox died before reading it all: its verdict will say so
            self._payload = self._payload[:0]
        else:
            self._payload = self._payload[sent:]
        if not self._payload:
            self._loop.remove_writer(self._channel.fileno())
            with contextlib.suppress(OSError):
                self._channel.shutdown(socket.SHUT_WR)  # EOF: the harness reads the payload to it

    def _on_output(self) -> None:
        try:
            chunk = os.read(self._stdout, 1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            self._eof = True
            self._loop.remove_reader(self._stdout)
            self._settle()
            return
        self.output += chunk[: self._max_output + 1 - len(self.output)]
        if len(self.output) > self._max_output:
            # Killing on overflow (rather than just discarding) stops a print loop from burning
            # CPU until the wall clock runs out.
            self.kill("output_limit")

    def _on_exit(self) -> None:
        self._exited = True
        self._loop.remove_reader(self._pidfd)
        self._settle()

    def _settle(self) -> None:
        # A killed run stops at its exit: output still buffered is dropped.
        if self._exited and (self._eof or self.killed is not None) and not self.done.done():
            self.done.set_result(None)


def _killed_by_signal(returncode: int | None) -> KillReason | None:
    """bwrap reports a child killed by signal N as 128 + N; an unsandboxed harness as -N."""
    if returncode is None or 0 <= returncode <= 128:
        return None
    signum = -returncode if returncode < 0 else returncode - 128
    return "cpu_limit" if signum == signal.SIGXCPU else "signal"


def _kill_group(pid: int) -> None:
    # bwrap leads the group; its pid-namespace init dies with it (--die-with-parent), and the
    # kernel then kills every process left in the namespace.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _drain(sock: socket.socket) -> bytes:
    """Everything the sandbox wrote on the verdict channel (all writers have exited)."""
    chunks = []
    with contextlib.suppress(BlockingIOError, ConnectionError):
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
            if sum(map(len, chunks)) > 4096:  # a verdict is ~65 bytes; more is junk from user code
                break
    return b"".join(chunks)
