"""The hostile corpus through `unit_tests`: every attack scores 0, the host is unchanged, no sandbox
process outlives its run, and the scorer still scores honest code correctly afterwards.

A second test removes the harness's in-process defences and checks that the `forges` cases then
do score: the corpus's attacks are real, so the first test cannot pass by them being broken. The
same pair runs on Python 3.12 (sys.monitoring, settrace_all_threads) where this machine has it.
"""

import asyncio
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sandbox_hostile_corpus import CASES, SECRET_TEXT, TEST, HostileCase
from sandbox_support import find_python, running_sandboxes

from core.config.reward import UnitTestsScorerConfig
from reward_server.sandbox import dialect, runner
from reward_server.scorers import unit_tests
from reward_server.scorers.base import ScoreItem, ScorerResult
from reward_server.scorers.unit_tests import UnitTestsScorer

ROOT = Path(__file__).resolve().parents[3]
HONEST = "def f(x):\n    return 3 * x + 1\n"
pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


class HostServer:
    """A TCP server on the host's loopback that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@dataclass
class Host:
    """What the corpus attacks on the host, outside /tmp (the sandbox has a /tmp of its own)."""

    dir: Path
    server: HostServer

    @property
    def secret(self) -> Path:
        return self.dir / "config.yaml"

    @property
    def sentinel(self) -> Path:
        return self.dir / "sentinel.txt"

    @property
    def victim_dir(self) -> Path:
        return self.dir / "victim"

    def fill(self, code: str) -> str:
        """The case's code with its placeholders replaced by this host's paths."""
        base = Path(sys.base_prefix)
        values = {
            "secret": self.secret,
            "sentinel": self.sentinel,
            "victim_dir": self.victim_dir,
            "host_dir": self.dir,
            "root": ROOT,
            "port": self.server.port,
            "site_packages": sysconfig.get_path("purelib", vars={"base": base, "platbase": base}),
            "server_pid": os.getpid(),
        }
        for key, value in values.items():
            code = code.replace("{" + key + "}", str(value))
        return code

    def snapshot(self) -> dict[str, str]:
        """Digest of every file under the host dir, keyed by relative path."""
        files = sorted(path for path in self.dir.rglob("*") if path.is_file())
        return {str(path.relative_to(self.dir)): digest(path) for path in files}


@pytest.fixture
def host() -> Iterator[Host]:
    # In the repository, as a server's config would be: a real host path the sandbox must not see.
    for stale in ROOT.glob(".sandbox-test-host-*"):  # left by a test run that was killed
        if not Path("/proc", stale.name.rpartition("-")[2]).exists():
            shutil.rmtree(stale, ignore_errors=True)
    directory = ROOT / f".sandbox-test-host-{os.getpid()}"
    directory.mkdir()
    server = HostServer()
    host = Host(directory, server)
    host.secret.write_text(f"auth_token: {SECRET_TEXT}\n")
    host.sentinel.write_text("must survive")
    host.victim_dir.mkdir()
    try:
        yield host
    finally:
        server.close()
        shutil.rmtree(directory, ignore_errors=True)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def score_cases(scorer: UnitTestsScorer, host: Host, cases: list[HostileCase]) -> dict[str, ScorerResult]:
    items = [ScoreItem(prompt="", completion=host.fill(case.code), tests=[case.test]) for case in cases]
    return dict(zip([case.name for case in cases], asyncio.run(scorer.score(items)), strict=True))


def corpus_scorer(python: Path | None = None) -> UnitTestsScorer:
    config = UnitTestsScorerConfig(
        name="unit_tests",
        timeout_s=3.0,
        cpu_seconds=1,
        max_concurrency=4,
        prepend_prompt=False,
        python=python,
    )
    return UnitTestsScorer(config)


def cases_for(python: Path) -> list[HostileCase]:
    """The cases the interpreter at `python` can run (by `min_version`)."""
    version = subprocess.run(
        [str(python), "-I", "-S", "-c", "import sys; print(*sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    major, minor = int(version[0]), int(version[1])
    return [case for case in CASES if case.min_version <= (major, minor)]


# The honest items that ride along with the attacks: a sandbox broken by the attacks would fail them.
HONEST_CASES = [
    HostileCase("honest", HONEST),
    HostileCase("honest_two_line_test", HONEST, test="result = f(2)\nassert result == 7"),
    HostileCase("honest_uses_abs", HONEST, test="assert abs(f(2)) == 7"),
    HostileCase(
        "honest_dialect",
        HONEST + "import math\nclass Box:\n    def __init__(self, v):\n        self.v = v\n"
        "    def get(self):\n        return self.v\n",
        test="import math\nassert math.isclose(f(2), 7.0)\nb = Box([f(k) for k in range(3)])\n"
        "a, c = b.get()[0], {f(1): 'x'}\nassert a == 1 and c[4] == 'x' and not b.get() != [1, 4, 7]\n"
        "assert all(f(k) > k for k in range(5)) and sorted({f(0), f(1)}) == [1, 4]\n"
        "for k, v in zip(range(3), b.get()):\n    assert v - 1 == 3 * k",
    ),
]


def test_the_corpus_is_big_and_covers_every_kind_of_attack() -> None:
    assert len(CASES) >= 25
    assert len({case.name for case in CASES}) == len(CASES)
    assert sum(case.forges for case in CASES) >= 5
    # Issue 17: the completion's own objects and the interpreter's back doors.
    names = {case.name for case in CASES}
    assert {
        "object_equals_everything",
        "monitoring_reads_test_constants",
        "create_builtin_posixsubprocess",
    } <= names


def test_every_attack_scores_zero_and_the_host_is_unchanged(host: Host) -> None:
    scorer = corpus_scorer()
    python = Path(scorer.command.interpreter.executable)
    before = {"files": host.snapshot(), "python": digest(python)}

    scored = score_cases(scorer, host, [*cases_for(python), *HONEST_CASES])

    assert {case.name: scored.pop(case.name).score for case in HONEST_CASES} == {
        case.name: 1.0 for case in HONEST_CASES
    }
    # Not an error either: every attack is judged, and judged a fail.
    leaks = {name: result for name, result in scored.items() if (result.status, result.score) != ("ok", 0.0)}
    assert leaks == {}, f"attacks that scored (or broke the sandbox): {leaks}"
    # The host: files intact, nothing written, no connection reached the host server, we live.
    assert host.snapshot() == before["files"]
    assert digest(python) == before["python"]
    assert not Path("/usr/pwned").exists()
    assert host.server.accepted == 0
    assert running_sandboxes() == []
    # The resource attacks were killed (and counted), not waited out.
    # (Which limit ends a CPU loop first, RLIMIT_CPU or the clock, depends on the host's load.)
    assert scorer.kills["timeout"] >= 2  # the sleep loop and the sleeping thread bomb
    # + the CPU loop (the unbounded recursion now ends in a MemoryError on the worker thread: a fail)
    assert scorer.kills["cpu_limit"] + scorer.kills["timeout"] >= 3
    assert scorer.kills["output_limit"] >= 1
    assert scorer.kills["signal"] >= 1  # the C stack overflow's SIGSEGV

    # The same scorer keeps working after the corpus.
    after = asyncio.run(
        scorer.score(
            [
                ScoreItem(prompt="", completion=code, tests=[TEST])
                for code in (HONEST, "def f(x):\n    return 0\n")
            ]
        )
    )
    assert [result.score for result in after] == [1.0, 0.0]


# What "the harness's in-process defences" are, as edits to the harness source that remove each.
DEFENCES = [
    ("    _install_guard(idents[1])\n", "    pass\n"),  # the audit guard
    ("    names = dict(test_builtins)\n", '    names = ns["__builtins__"]\n'),  # the test's own builtins
    (" and key not in test_builtins and ", " and "),  # completion names never shadow a builtin
    # read-only builtins (a mappingproxy; a raw `import` statement needs a dict there)
    ('    tg["__builtins__"] = type(type.__dict__)(names)', '    tg["__builtins__"] = names'),
]


def without_defences(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every in-process defence: the edits above, and the rewrite (the test runs as written,
    on its thread, calling the completion there: only the wrapping and `__tandem_done` remain)."""
    source = runner.HARNESS_SOURCE
    for defence, removed in DEFENCES:
        assert source.count(defence) == 1, f"the harness no longer contains {defence!r}"
        source = source.replace(defence, removed)
    monkeypatch.setattr(runner, "HARNESS_SOURCE", source)
    monkeypatch.setattr(dialect._Rewriter, "statements", lambda self, nodes: nodes)
    unit_tests._prepared.cache_clear()  # tests already rewritten by other tests in this process


@pytest.fixture
def no_defences(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    without_defences(monkeypatch)
    yield
    unit_tests._prepared.cache_clear()  # nothing prepared without the rewrite may outlive this test


def test_the_forging_attacks_work_without_the_harness_defences(host: Host, no_defences: None) -> None:
    scorer = corpus_scorer()
    forgers = [case for case in cases_for(scorer.command.interpreter.executable) if case.forges]

    scored = score_cases(scorer, host, forgers)

    assert {name: result.score for name, result in scored.items()} == {case.name: 1.0 for case in forgers}


PYTHON_312 = find_python("3.12")
needs_312 = pytest.mark.skipif(PYTHON_312 is None, reason="no python3.12 on this machine")


@needs_312
def test_on_python_3_12_every_forger_scores_zero(host: Host) -> None:
    # The verdict forgers (the resource and host cases are the interpreter-independent bwrap
    # layer's) plus the honest items, on 3.12: sys.monitoring and settrace_all_threads included.
    assert PYTHON_312 is not None
    scorer = corpus_scorer(PYTHON_312)
    forgers = [case for case in cases_for(PYTHON_312) if case.forges]
    expected = {
        "monitoring_reads_test_constants",
        "settrace_all_threads",
        "setprofile_all_threads_reads_nonce",
    }
    assert expected <= {case.name for case in forgers}

    scored = score_cases(scorer, host, [*forgers, *HONEST_CASES])

    assert {case.name: scored.pop(case.name).score for case in HONEST_CASES} == {
        case.name: 1.0 for case in HONEST_CASES
    }
    assert {name: (result.status, result.score) for name, result in scored.items()} == {
        case.name: ("ok", 0.0) for case in forgers
    }


@needs_312
def test_on_python_3_12_the_forgers_work_without_the_defences(host: Host, no_defences: None) -> None:
    assert PYTHON_312 is not None
    # 3.12 runs a scheduled collection on whichever thread checks first, so the gc-callback case
    # does not reliably reach the test's thread there; it is proven on 3.11 above.
    forgers = [
        case for case in cases_for(PYTHON_312) if case.forges and case.name != "gc_callback_on_test_thread"
    ]

    scored = score_cases(corpus_scorer(PYTHON_312), host, forgers)

    assert {name: result.score for name, result in scored.items()} == {case.name: 1.0 for case in forgers}
