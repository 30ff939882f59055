"""`unit_tests` scorer behaviour: extraction, fractions, item errors (tests outside the dialect, a
sandbox that cannot start its threads), kills and their metrics, cancellation, concurrency,
construction through `build_scorer`, the interpreter checks, and the `sandbox: none` opt-out."""

import asyncio
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sandbox_support import find_python, running_sandboxes

from core.config.reward import UnitTestsScorerConfig
from reward_server.sandbox import runner
from reward_server.sandbox.bwrap import running_as_root
from reward_server.scorers import build_scorer, unit_tests
from reward_server.scorers.base import ScoreItem, ScorerResult
from reward_server.scorers.unit_tests import SandboxUnavailableError, UnitTestsScorer, extract_code

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
TESTS = ["assert f(2) == 7", "assert f(0) == 1", "assert f(-1) == -2"]
PROMPT = "def f(x):\n    return "


def config(**overrides: object) -> UnitTestsScorerConfig:
    return UnitTestsScorerConfig(**{"name": "unit_tests", "timeout_s": 3.0, "cpu_seconds": 1, **overrides})


def score(scorer: UnitTestsScorer, *items: ScoreItem) -> list[ScorerResult]:
    return asyncio.run(scorer.score(items))


@pytest.fixture(scope="module")
def scorer() -> UnitTestsScorer:
    return UnitTestsScorer(config()) if shutil.which("bwrap") else pytest.skip("bubblewrap is not installed")


def test_extract_code_prefers_the_first_python_block() -> None:
    completion = "Here:\n```python\ndef f(x):\n    return 1\n```\nand\n```python\nbad\n```"
    assert extract_code("def f(x):\n", completion, prepend_prompt=True) == "def f(x):\n    return 1\n"
    assert extract_code("", "```py\nx = 1\n```", prepend_prompt=False) == "x = 1\n"
    # A bare fence counts only when no block is tagged as Python.
    assert extract_code("", "```\nx = 2\n```", prepend_prompt=True) == "x = 2\n"
    assert extract_code("", "```\nshell\n```\n```python\nx = 3\n```", prepend_prompt=True) == "x = 3\n"


def test_extract_code_prepends_the_prompt_to_raw_completions() -> None:
    assert extract_code(PROMPT, "x*3+1", prepend_prompt=True) == "def f(x):\n    return x*3+1"
    assert extract_code(PROMPT, "x*3+1", prepend_prompt=False) == "x*3+1"


@needs_bwrap
def test_rewards_are_the_fraction_of_tests_passed(scorer: UnitTestsScorer) -> None:
    correct = ScoreItem(prompt=PROMPT, completion="x*3+1", tests=TESTS)
    # abs(3x+1) is right at 2 and 0, but f(-1) = 2 != -2: two of three
    partial = ScoreItem(prompt=PROMPT, completion="abs(x*3+1)", tests=TESTS)
    # right only at 0: one of three
    third = ScoreItem(prompt=PROMPT, completion="1 if x == 0 else 0", tests=TESTS)
    wrong = ScoreItem(prompt=PROMPT, completion="0", tests=TESTS)
    fenced = ScoreItem(
        prompt="ignored", completion="```python\ndef f(x):\n    return 3*x+1\n```", tests=TESTS
    )
    raising = ScoreItem(prompt=PROMPT, completion="1 // (x - 2)", tests=TESTS)  # f(2) raises
    results = score(scorer, correct, partial, third, wrong, fenced, raising)
    assert [r.status for r in results] == ["ok"] * 6
    assert [r.score for r in results] == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0, 1.0, 0.0])


@needs_bwrap
def test_honest_programs_using_the_standard_library_pass(scorer: UnitTestsScorer) -> None:
    code = (
        "import collections, dataclasses, functools, heapq, json, math, re, threading\n"
        "@dataclasses.dataclass\nclass Box:\n    value: int\n"
        "@functools.lru_cache\ndef f(x):\n    print('computing', x)\n"
        "    t = threading.Thread(target=lambda: None)\n    t.start()\n    t.join()\n"
        "    return Box(json.loads(str(3 * x + 1))).value\n"
    )
    tests = [
        *TESTS,
        "import math\nassert math.isclose(f(2), 7.0)\nfor k in range(3):\n    assert f(k) == 3*k+1",
    ]
    assert score(scorer, ScoreItem(prompt="", completion=code, tests=tests))[0].score == 1.0


@needs_bwrap
def test_a_completion_larger_than_the_socket_buffer_arrives_whole(scorer: UnitTestsScorer) -> None:
    # ~1 MB of payload: more than one send, so the rest goes out as the harness reads.
    code = "DATA = '" + "ab" * 500_000 + "'\ndef f(x):\n    return len(DATA) + x\n"
    item = ScoreItem(prompt="", completion=code, tests=["assert f(1) == 1_000_001"])
    assert score(scorer, item)[0].score == 1.0


@needs_bwrap
def test_each_test_runs_in_a_fresh_process(scorer: UnitTestsScorer) -> None:
    # The first test's side effect must not be visible to the second.
    code = "state = []\ndef f(x):\n    state.append(x)\n    return len(state)\n"
    item = ScoreItem(prompt="", completion=code, tests=["assert f(0) == 1", "assert f(0) == 1"])
    assert score(scorer, item)[0].score == 1.0


@needs_bwrap
def test_items_that_cannot_be_judged_are_errors_not_zeros(scorer: UnitTestsScorer) -> None:
    code = "def f(x):\n    return 1\n"
    no_tests = ScoreItem(prompt="", completion=code, tests=None)
    empty = ScoreItem(prompt="", completion=code, tests=[])
    bad_test = ScoreItem(prompt="", completion=code, tests=["pass", "assert f(2) =="])
    null_byte = ScoreItem(prompt="", completion=code, tests=["assert f(2) == 1\0"])
    results = score(scorer, no_tests, empty, bad_test, null_byte)
    assert [r.status for r in results] == ["error"] * 4
    assert [r.score for r in results] == [None] * 4
    assert "no tests" in results[0].error
    assert "test 1 is not valid Python" in results[2].error
    assert "test 0 is not valid Python" in results[3].error


@needs_bwrap
def test_a_sandbox_that_never_reaches_user_code_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    scorer = UnitTestsScorer(config())
    item = ScoreItem(prompt=PROMPT, completion="x*3+1", tests=TESTS)
    monkeypatch.setattr(runner, "HARNESS_SOURCE", "import sys\nsys.exit('harness broke')\n")
    [broken] = score(scorer, item)
    assert (broken.status, broken.score) == ("error", None)
    assert "failed to start" in broken.error and "harness broke" in broken.error
    monkeypatch.setattr(runner, "HARNESS_SOURCE", "import time\ntime.sleep(60)\n")
    [stuck] = score(UnitTestsScorer(config(timeout_s=0.5)), item)
    assert (stuck.status, stuck.score) == ("timeout", None)
    assert "did not reach user code" in stuck.error


@needs_bwrap
def test_a_syntax_error_in_the_completion_scores_zero(scorer: UnitTestsScorer) -> None:
    item = ScoreItem(prompt="", completion="def f(x) return 1", tests=["pass"])
    assert score(scorer, item)[0].score == 0.0


@needs_bwrap
def test_the_whole_completion_must_run_not_just_define_f(scorer: UnitTestsScorer) -> None:
    # f is right in all three, but the program stops early: a harness judging by exit status
    # (or running the test anyway) would pass the exits; the user token written by the
    # completion's last line is missing, so none scores.
    right = "def f(x):\n    return 3 * x + 1\n"
    endings = ["import sys\nsys.exit(0)\n", "raise SystemExit(0)\n", "import os\nos._exit(0)\n", "1 / 0\n"]
    items = [ScoreItem(prompt="", completion=right + ending, tests=TESTS) for ending in endings]
    assert [r.score for r in score(scorer, *items)] == [0.0] * len(endings)
    assert score(scorer, ScoreItem(prompt="", completion=right, tests=TESTS))[0].score == 1.0


@needs_bwrap
def test_kills_are_counted_in_the_scorer_and_in_prometheus() -> None:
    name = f"unit_tests_kills_{os.getpid()}"  # a fresh label set: the registry is process-wide
    # A wall clock far beyond the 1 s CPU limit, so the CPU limit is what ends the spinner even on
    # a loaded host; a second scorer of the same name with a short clock for the sleeper.
    limits = UnitTestsScorer(config(name=name, timeout_s=60.0, max_output_bytes=1000))
    clock = UnitTestsScorer(config(name=name, timeout_s=1.0))
    printer = ScoreItem(prompt="", completion="while True:\n    print('x' * 100)\n", tests=["pass"])
    spinner = ScoreItem(prompt="", completion="while True:\n    pass\n", tests=["pass"])
    # Recursion through C (map) overflows the C stack: SIGSEGV.
    overflow = "import sys\nsys.setrecursionlimit(10**7)\ng = lambda n: list(map(g, [n]))\ng(0)\n"
    crasher = ScoreItem(prompt="", completion=overflow, tests=["pass"])
    sleeper = ScoreItem(prompt="", completion="import time\ntime.sleep(60)\n", tests=["pass"])

    async def both() -> list[list[ScorerResult]]:
        return await asyncio.gather(limits.score([printer, spinner, crasher]), clock.score([sleeper]))

    results = [result.score for batch in asyncio.run(both()) for result in batch]
    assert results == [0.0, 0.0, 0.0, 0.0]
    assert dict(limits.kills) == {"output_limit": 1, "cpu_limit": 1, "signal": 1}
    assert dict(clock.kills) == {"timeout": 1}
    counted = {
        reason: REGISTRY.get_sample_value(
            "tandem_reward_sandbox_kills_total", {"scorer": name, "reason": reason}
        )
        for reason in ("output_limit", "cpu_limit", "signal", "timeout")
    }
    assert counted == {"output_limit": 1.0, "cpu_limit": 1.0, "signal": 1.0, "timeout": 1.0}


@needs_bwrap
def test_cancelling_a_score_call_kills_its_sandboxes() -> None:
    scorer = UnitTestsScorer(config(timeout_s=30.0, max_concurrency=3))
    sleepers = [
        ScoreItem(prompt="", completion="import time\ntime.sleep(60)\n", tests=["pass"]) for _ in range(5)
    ]

    async def score_with_deadline() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(scorer.score(sleepers), 1.0)

    started = time.perf_counter()
    asyncio.run(score_with_deadline())
    assert time.perf_counter() - started < 5.0
    assert running_sandboxes() == []


@needs_bwrap
def test_runs_are_limited_to_max_concurrency() -> None:
    scorer = UnitTestsScorer(config(max_concurrency=2))
    code = "import time\ntime.sleep(0.4)\ndef f():\n    return 1\n"
    item = ScoreItem(prompt="", completion=code, tests=["assert f() == 1"] * 4)
    start = time.perf_counter()
    assert score(scorer, item)[0].score == 1.0
    # Four 0.4 s runs, two at a time: two rounds.
    assert time.perf_counter() - start >= 0.8


@needs_bwrap
def test_the_scorer_survives_many_event_loops(scorer: UnitTestsScorer) -> None:
    item = ScoreItem(prompt="", completion="def f(x):\n    return 3*x+1\n", tests=TESTS)
    assert [score(scorer, item)[0].score for _ in range(3)] == [1.0, 1.0, 1.0]


@needs_bwrap
def test_build_scorer_makes_a_sandboxed_unit_tests_scorer() -> None:
    built = build_scorer(config(name="from_config"))
    assert isinstance(built, UnitTestsScorer)
    assert built.name == "from_config"
    assert Path(built.command.prefix[0]).name == "bwrap"


PYTHON_312 = find_python("3.12")


@needs_bwrap
@pytest.mark.skipif(PYTHON_312 is None, reason="no python3.12 on this machine")
def test_a_configured_interpreter_runs_with_its_own_dangerous_modules_hidden() -> None:
    assert PYTHON_312 is not None
    scorer = UnitTestsScorer(config(python=PYTHON_312))
    assert scorer.command.interpreter.executable == PYTHON_312
    honest = ScoreItem(prompt=PROMPT, completion="x*3+1", tests=TESTS)
    # Hidden by the mounts, not only refused by the guard: the interpreter's own extension files
    # for these modules are /dev/null bound on a nodev mount inside the sandbox, so unreadable.
    # (The probe is the completion: a test may not contain try/raise; a failed assert there stops
    # the completion before its last line, so the item scores 0.)
    probe = (
        "import glob, os\nlib = os.path.dirname(os.__file__) + '/lib-dynload/'\n"
        "found = glob.glob(lib + '_ctypes.*.so') + glob.glob(lib + '_testcapi.*.so')\n"
        "assert len(found) == 2\nfor path in found:\n    try:\n        open(path, 'rb')\n"
        "    except PermissionError:\n        continue\n    raise AssertionError(path + ' is readable')\n"
        "def f():\n    return 1\n"
    )
    hidden = ScoreItem(prompt="", completion=probe, tests=["assert f() == 1"])
    version = ScoreItem(
        prompt="",
        completion="import sys\ndef f():\n    return sys.version_info[:2]\n",
        tests=["assert f() == (3, 12)"],
    )
    assert [r.score for r in score(scorer, honest, hidden, version)] == [1.0, 1.0, 1.0]


@pytest.mark.skipif(
    not Path("/usr/bin/python3.11").exists()
    or "_posixsubprocess"
    not in subprocess.run(
        ["/usr/bin/python3.11", "-I", "-S", "-c", "import sys; print(sys.builtin_module_names)"],
        capture_output=True,
        text=True,
    ).stdout,
    reason="no interpreter here with _posixsubprocess compiled in (Debian's /usr/bin/python3.11 has it)",
)
@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_refuses_to_start_with_a_denied_module_compiled_in(sandbox: str) -> None:
    # `_imp.create_builtin` would load it with no import audit event, and no file to hide.
    with pytest.raises(SandboxUnavailableError, match="_posixsubprocess compiled in"):
        UnitTestsScorer(config(python=Path("/usr/bin/python3.11"), sandbox=sandbox))


@needs_bwrap
def test_tests_outside_the_dialect_are_item_errors_naming_the_construct(scorer: UnitTestsScorer) -> None:
    code = "def f(x):\n    return 3 * x + 1\n"
    refused = {
        "def g():\n    return 7\nassert f(2) == g()": "line 1: function definitions (def)",
        "assert f(2) == 7\ntry:\n    pass\nexcept Exception:\n    pass": "line 2: try statements",
        "assert (lambda: f(2))() == 7": "lambda",
        "while True:\n    break": "while loops",
        "x = f.__globals__": "dunder attributes (.__globals__)",
        "assert __builtins__ is not None": "dunder names (__builtins__)",
        "assert f(*[2]) == 7": "starred expressions",
        "x = f'{f(2)}'": "f-strings",
        "f.cache = {}": "assignments to attributes or subscripts",
    }
    items = [ScoreItem(prompt="", completion=code, tests=["assert f(0) == 1", test]) for test in refused]
    results = score(scorer, *items)
    assert [(r.status, r.score) for r in results] == [("error", None)] * len(refused)
    for result, construct in zip(results, refused.values(), strict=True):
        assert "test 1 is outside the test dialect" in result.error and construct in result.error


@needs_bwrap
@pytest.mark.parametrize("max_processes", [1, 3])
def test_a_sandbox_that_cannot_start_its_threads_is_an_error_not_a_zero(max_processes: int) -> None:
    # One process is the harness alone; three leaves no room for the worker thread. Neither may
    # read as "the completion failed": no user code ran.
    scorer = UnitTestsScorer(config(max_processes=max_processes))
    [result] = score(scorer, ScoreItem(prompt=PROMPT, completion="x*3+1", tests=TESTS))
    assert (result.status, result.score) == ("error", None)
    assert (
        "could not start its threads" in result.error and f"max_processes is {max_processes}" in result.error
    )
    # Four is enough for the harness's own threads (as root each run has a uid, and so a count,
    # of its own; unprivileged, the count depends on the host's processes of that user).
    if running_as_root():
        item = ScoreItem(prompt=PROMPT, completion="x*3+1", tests=TESTS)
        assert score(UnitTestsScorer(config(max_processes=4)), item)[0].score == 1.0


@needs_bwrap
def test_the_issue_example_scores_zero_and_honest_code_one(scorer: UnitTestsScorer) -> None:
    tests = ["assert f(2) == 7", "assert f(0) == 1"]
    forged = "def f(x): return type('A', (), {'__eq__': lambda *a: True})()"
    results = score(
        scorer,
        ScoreItem(prompt="", completion=forged, tests=tests),
        ScoreItem(prompt="", completion="def f(x): return 3 * x + 1", tests=tests),
    )
    assert [(r.status, r.score) for r in results] == [("ok", 0.0), ("ok", 1.0)]


@needs_bwrap
def test_the_shipped_code_task_scores_right_and_wrong_answers() -> None:
    import random

    from core.tinymodels.tasks import flawed_target, make_problem

    problems = [make_problem("code", random.Random(seed), seed) for seed in range(4)]
    scorer = UnitTestsScorer(config(prepend_prompt=True))
    items = [ScoreItem(prompt=p.prompt, completion=p.reference, tests=p.tests) for p in problems]
    # correct_fraction 0: always the task's typical mistake (slope and intercept swapped)
    mistakes = [flawed_target("code", p, random.Random(0), correct_fraction=0.0) for p in problems]
    items += [
        ScoreItem(prompt=p.prompt, completion=m, tests=p.tests)
        for p, m in zip(problems, mistakes, strict=True)
    ]
    scores = [r.score for r in score(scorer, *items)]
    assert scores[:4] == [1.0] * 4
    assert all(value is not None and value < 1.0 for value in scores[4:])


def test_refuses_to_start_without_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unit_tests.shutil, "which", lambda name: None)
    with pytest.raises(SandboxUnavailableError, match="sandbox: none"):
        UnitTestsScorer(config())


def test_sandbox_none_warns_loudly_and_still_scores(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(unit_tests.shutil, "which", lambda name: None)
    with caplog.at_level(logging.WARNING):
        scorer = UnitTestsScorer(config(sandbox="none"))
    assert "WITHOUT a sandbox" in caplog.text
    assert scorer.command.prefix == ()
    item = ScoreItem(prompt=PROMPT, completion="x*3+1", tests=TESTS)
    early_exit = ScoreItem(prompt="", completion="import os\nos._exit(0)\n", tests=TESTS)
    assert [r.score for r in score(scorer, item, early_exit)] == [1.0, 0.0]
