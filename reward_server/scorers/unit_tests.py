"""`unit_tests`: reward = fraction of an item's tests that pass, each run alone in the sandbox.

The completion's code is its first ```python fenced block (else its first untagged ``` block; the
prompt is not prepended: a fenced block is a whole program), else the raw completion with the
prompt prepended when `prepend_prompt` is set (prompt `def f(x):\\n    return ` + completion
`x*3+1`). Every test runs in its own sandbox process with a fresh copy of the code, so one test's
side effects cannot pass another.

A test that fails, times out or is killed counts as not passed: that is the completion's verdict.
The item is an error only when it cannot be judged: no tests, a test that is not valid Python,
or a sandbox that failed (or was killed) before reaching user code.
"""

import asyncio
import logging
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Sequence

from core.config.reward import UnitTestsScorerConfig
from reward_server.metrics import record_sandbox_kill
from reward_server.sandbox.bwrap import Interpreter, Limits, running_as_root
from reward_server.sandbox.runner import KillReason, RunOutcome, SandboxCommand, run_test
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

    async def run_tests(self, code: str, tests: Sequence[str]) -> list[RunOutcome]:
        """Run each test against `code`, each in its own sandbox, at most max_concurrency at once."""
        return list(await asyncio.gather(*(self._run_one(code, test) for test in tests)))

    async def _score_item(self, item: ScoreItem) -> ScorerResult:
        if not item.tests:
            return ScorerResult.failed("unit_tests: the item has no tests")
        for index, test in enumerate(item.tests):
            try:
                compile(test, f"<test {index}>", "exec")
            except (SyntaxError, ValueError) as error:  # ValueError: a null byte in the source
                return ScorerResult.failed(f"unit_tests: test {index} is not valid Python: {error}")
        code = extract_code(item.prompt, item.completion, self.config.prepend_prompt)
        outcomes = await self.run_tests(code, item.tests)
        # Runs that never reached user code say nothing about the completion: the item is failed
        # rather than scored 0, so an overloaded host does not turn into a wrong reward.
        unjudged = [outcome for outcome in outcomes if not outcome.started]
        if unjudged:
            first = unjudged[0]
            tail = first.output[-500:].decode(errors="replace")
            if first.killed == "timeout":
                return ScorerResult.failed(
                    f"unit_tests: the sandbox did not reach user code within {self.config.timeout_s} s",
                    status="timeout",
                )
            return ScorerResult.failed(f"unit_tests: the sandbox failed to start: {tail}")
        return ScorerResult.ok(sum(outcome.passed for outcome in outcomes) / len(outcomes))

    async def _run_one(self, code: str, test: str) -> RunOutcome:
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


def _checked_bwrap(interpreter: Interpreter) -> SandboxCommand:
    """Refuse to start without a working bwrap: a scorer that cannot sandbox must not score."""
    if shutil.which("bwrap") is None:
        raise SandboxUnavailableError(
            "unit_tests needs bubblewrap (`bwrap` is not on PATH): install it (apt-get install "
            "bubblewrap), or set `sandbox: none` in the scorer config to run completions "
            "unsandboxed (trusted code only)"
        )
    command = SandboxCommand.bwrap(interpreter, as_root=running_as_root())
    probe = [*command.prefix, str(interpreter.executable), "-I", "-S", "-c", "pass"]
    result = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise SandboxUnavailableError(
            f"bwrap is installed but cannot start a sandbox with {interpreter.executable} (exit "
            f"{result.returncode}: {result.stderr.strip()}); the interpreter must lie outside /tmp, "
            "and as non-root bwrap needs user namespaces (sysctl user.max_user_namespaces)"
        )
    return command
