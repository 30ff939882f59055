"""`unit_tests`: reward = fraction of an item's tests that pass, each run alone in the sandbox.

The completion's code is its first ```python fenced block (else its first untagged ``` block; the
prompt is not prepended: a fenced block is a whole program), else the raw completion with the
prompt prepended when `prepend_prompt` is set (prompt `def f(x):\\n    return ` + completion
`x*3+1`). Every test runs in its own sandbox process with a fresh copy of the code, so one test's
side effects cannot pass another.

Each test is first checked against the test dialect and rewritten (sandbox/dialect.py), so that
its verdict is judged by the harness's strict comparisons, never by a method of the completion's
objects; docs/sandbox.md describes the dialect and the threat model.

A test that fails, times out or is killed counts as not passed: that is the completion's verdict.
The item is an error only when it cannot be judged: no tests, a test that is not valid Python or
is outside the dialect, or a sandbox that failed (or was killed) before reaching user code, or
could not start its threads (a `max_processes` too low to run any test).
"""

import asyncio
import functools
import logging
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Sequence

from core.config.reward import UnitTestsScorerConfig
from reward_server.metrics import record_sandbox_kill
from reward_server.sandbox.bwrap import Interpreter, Limits, running_as_root
from reward_server.sandbox.dialect import DialectError, PreparedTest, prepare_test
from reward_server.sandbox.harness import DENIED_MODULES
from reward_server.sandbox.runner import KillReason, RunOutcome, SandboxCommand, run_test
from reward_server.sandbox.seccomp import SeccompUnavailableError
from reward_server.scorers.base import ScoreItem, ScorerResult

log = logging.getLogger(__name__)
PYTHON_FENCE = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\r?\n(.*?)```", re.DOTALL | re.IGNORECASE)
PLAIN_FENCE = re.compile(r"```[ \t]*\r?\n(.*?)```", re.DOTALL)


class SandboxUnavailableError(RuntimeError):
    """bwrap is missing or cannot start a sandbox, and the config did not opt out of it."""


def extract_code(prompt: str, completion: str, prepend_prompt: bool) -> str:
    """The program to run: the first ```python block, else the first bare ``` block, else
    prompt + completion (or the completion alone when `prepend_prompt` is off)."""
    for fence in (PYTHON_FENCE, PLAIN_FENCE):
        if (block := fence.search(completion)) is not None:
            return block.group(1)
    return prompt + completion if prepend_prompt else completion


class UnitTestsScorer:
    """Scores items by running their `tests` against the completion's code in bubblewrap.

    Every run the sandbox kills is counted in `kills` and in the Prometheus counter
    `tandem_reward_sandbox_kills{scorer, reason}` (reasons: runner.KillReason).
    """

    def __init__(self, config: UnitTestsScorerConfig) -> None:
        self.name = config.name
        self.config = config
        self.kills: Counter[KillReason] = Counter()
        interpreter = Interpreter.at(config.python) if config.python else Interpreter.current()
        _refuse_denied_builtins(interpreter)
        if config.sandbox == "none":
            log.warning(
                "!!! scorer %r runs completions WITHOUT a sandbox (sandbox: none): untrusted code "
                "can read, write and delete anything this server can. Use only for trusted code. !!!",
                config.name,
            )
            self.command = SandboxCommand.unsandboxed(interpreter)
        else:
            self.command = _checked_bwrap(interpreter)
        self._limits = Limits(
            timeout_s=config.timeout_s,
            cpu_seconds=config.cpu_seconds,
            memory_mb=config.memory_mb,
            max_processes=config.max_processes,
            max_output_bytes=config.max_output_bytes,
        )
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    async def score(self, items: Sequence[ScoreItem]) -> list[ScorerResult]:
        return list(await asyncio.gather(*(self._score_item(item) for item in items)))

    async def close(self) -> None:
        """Nothing to release: every sandbox is waited for (or killed) before `score` returns."""

    async def run_tests(self, code: str, tests: Sequence[PreparedTest | str]) -> list[RunOutcome]:
        """Run each test against `code`, each in its own sandbox, at most max_concurrency at once
        (a test given as source is prepared first: DialectError if outside the dialect)."""
        return list(await asyncio.gather(*(self._run_one(code, test) for test in tests)))

    async def _score_item(self, item: ScoreItem) -> ScorerResult:
        if not item.tests:
            return ScorerResult.failed("unit_tests: the item has no tests")
        prepared = []
        for index, test in enumerate(item.tests):
            try:
                prepared.append(_prepared(test))
            except (SyntaxError, ValueError) as error:  # ValueError: a null byte in the source
                dialect = isinstance(error, DialectError)
                why = "is outside the test dialect" if dialect else "is not valid Python"
                return ScorerResult.failed(f"unit_tests: test {index} {why}: {error}")
        code = extract_code(item.prompt, item.completion, self.config.prepend_prompt)
        outcomes = await self.run_tests(code, prepared)
        # Runs that never reached user code say nothing about the completion: the item is failed
        # rather than scored 0, so an overloaded host does not turn into a wrong reward.
        unjudged = [outcome for outcome in outcomes if not outcome.started]
        if unjudged:
            first = unjudged[0]
            tail = first.output[-500:].decode(errors="replace")
            if first.threads_failed:
                return ScorerResult.failed(
                    "unit_tests: the sandbox could not start its threads (the completion's, the test's "
                    f"and the worker's; max_processes is {self.config.max_processes}, each run needs 4 "
                    "and more for threads of its own): no test ran"
                )
            if first.killed == "timeout":
                return ScorerResult.failed(
                    f"unit_tests: the sandbox did not reach user code within {self.config.timeout_s} s",
                    status="timeout",
                )
            return ScorerResult.failed(f"unit_tests: the sandbox failed to start: {tail}")
        return ScorerResult.ok(sum(outcome.passed for outcome in outcomes) / len(outcomes))

    async def _run_one(self, code: str, test: PreparedTest | str) -> RunOutcome:
        async with self._semaphore():
            return await run_test(self.command, code, test, self._limits, self._count_kill)

    def _semaphore(self) -> asyncio.Semaphore:
        """The concurrency limit of the running loop (an asyncio.Semaphore is bound to one loop)."""
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(self.config.max_concurrency))
        return self._slots[1]

    def _count_kill(self, reason: KillReason) -> None:
        self.kills[reason] += 1
        record_sandbox_kill(self.name, reason)


@functools.lru_cache(maxsize=4096)
def _prepared(test: str) -> PreparedTest:
    """A group's completions share their tests: each is checked and rewritten once."""
    return prepare_test(test)


def _refuse_denied_builtins(interpreter: Interpreter) -> None:
    """Refuse an interpreter with a denied module compiled in: `_imp.create_builtin` loads a
    built-in module without the import audit event, so neither hiding its file nor the guard's
    import check would keep it from the completion (Debian's python3.11 builds _posixsubprocess in)."""
    probe = "import sys; print(' '.join(sys.builtin_module_names))"
    names = subprocess.run(
        [str(interpreter.executable), "-I", "-S", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()
    denied = sorted(name for name in names if name in DENIED_MODULES or name.startswith("_test"))
    if denied:
        raise SandboxUnavailableError(
            f"unit_tests cannot use {interpreter.executable}: it has {', '.join(denied)} compiled in "
            "(sys.builtin_module_names), which the sandbox cannot hide from a completion; use an "
            "interpreter built with them as extension modules (e.g. a pyenv or python.org build)"
        )


def _checked_bwrap(interpreter: Interpreter) -> SandboxCommand:
    """Refuse to start without a working bwrap: a scorer that cannot sandbox must not score."""
    if shutil.which("bwrap") is None:
        raise SandboxUnavailableError(
            "unit_tests needs bubblewrap (`bwrap` is not on PATH): install it (apt-get install "
            "bubblewrap), or set `sandbox: none` in the scorer config to run completions "
            "unsandboxed (trusted code only)"
        )
    try:
        command = SandboxCommand.bwrap(interpreter, as_root=running_as_root())
    except SeccompUnavailableError as error:
        raise SandboxUnavailableError(f"unit_tests cannot build its sandbox: {error}") from error
    # The whole sandbox, seccomp filter included, must start the interpreter.
    result = command.run(["-I", "-S", "-c", "pass"], timeout=30)
    if result.returncode != 0:
        raise SandboxUnavailableError(
            f"bwrap is installed but cannot start a sandbox with {interpreter.executable} (exit "
            f"{result.returncode}: {result.stderr.strip()}); the interpreter must lie outside /tmp, "
            "and as non-root bwrap needs user namespaces (sysctl user.max_user_namespaces)"
        )
    return command
