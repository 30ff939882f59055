"""Sandbox throughput: `unit_tests` executions/s in bubblewrap vs plain `subprocess.run([python, "-c", ...])`.

The same (completion, test) snippets run both ways at the same concurrency:
  sandboxed  UnitTestsScorer.score: bwrap (net/pid/ipc/uts namespaces, read-only mounts of the
             stdlib and its libraries, private tmpfs), the seccomp filter, rlimits, the harness's
             audit guard and unforgeable verdict, one sandbox per test
  plain      subprocess.run([python, "-c", code + test]) from a thread pool: no isolation, no limits,
             the exit status as the verdict
  plain -I -S  the same with the interpreter flags the sandbox itself starts Python with (no site
             import, isolated mode): what the plain side costs once it skips the same work
Both use the interpreter the scorer runs (the base interpreter under a venv). The sides alternate
(and swap order every repetition), so drift on a shared machine hits all of them. Prints medians,
spread and the ratio sandboxed / plain (target >= 0.5). Every sandboxed item must score 1.0 and
every plain run exit 0, or the benchmark stops: a fast wrong answer is not a figure.
A benchmark, not a test: nothing fails on a figure. `tandem bench sandbox` calls `run(quick)`.

    .venv/bin/python benchmarks/sandbox_bench.py [--executions 96] [--concurrency 4] [--repeats 7]
"""

import argparse
import asyncio
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from core.config.reward import UnitTestsScorerConfig
from reward_server.scorers.base import ScoreItem
from reward_server.scorers.unit_tests import UnitTestsScorer

from harness import BenchResult, Comparison

# Typical unit-test rewards: a short function and one assert each, some importing the stdlib.
SNIPPETS = [
    ("def f(x):\n    return 3 * x + 1\n", "assert f(2) == 7"),
    ("def rev(s):\n    return s[::-1]\n", "assert rev('abc') == 'cba'"),
    (
        "import math\ndef is_prime(n):\n"
        "    return n > 1 and all(n % d for d in range(2, math.isqrt(n) + 1))\n",
        "assert [n for n in range(20) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19]",
    ),
    (
        "from collections import Counter\ndef top(words):\n    return Counter(words).most_common(1)[0][0]\n",
        "assert top(['a', 'b', 'a']) == 'a'",
    ),
    (
        "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
        "assert fib(30) == 832040",
    ),
    ("import json\ndef parse(s):\n    return json.loads(s)['k']\n", "assert parse('{\"k\": 3}') == 3"),
]


def workload(executions: int) -> list[tuple[str, str]]:
    return [SNIPPETS[index % len(SNIPPETS)] for index in range(executions)]


def run_sandboxed(scorer: UnitTestsScorer, pairs: list[tuple[str, str]]) -> float:
    items = [ScoreItem(prompt="", completion=code, tests=[test]) for code, test in pairs]
    started = time.perf_counter()
    results = asyncio.run(scorer.score(items))
    elapsed = time.perf_counter() - started
    wrong = [result for result in results if result.score != 1.0]
    if wrong:
        raise SystemExit(f"sandboxed runs did not all pass: {wrong[:3]}")
    return len(pairs) / elapsed


def run_plain(argv: list[str], pairs: list[tuple[str, str]], concurrency: int) -> float:
    def one(pair: tuple[str, str]) -> int:
        code, test = pair
        return subprocess.run([*argv, code + "\n" + test], capture_output=True, timeout=60).returncode

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        codes = list(pool.map(one, pairs))
    elapsed = time.perf_counter() - started
    if any(codes):
        raise SystemExit(f"plain runs failed: exit codes {sorted(set(codes))}")
    return len(pairs) / elapsed


SANDBOXED, PLAIN, LEAN = "sandboxed (bwrap + harness)", "plain python -c", "plain python -I -S -c"


def measure(executions: int, concurrency: int, repeats: int) -> tuple[str, dict[str, list[float]]]:
    """The interpreter used, and executions/s of each side per repetition (order alternating)."""
    config = UnitTestsScorerConfig(name="bench", max_concurrency=concurrency, prepend_prompt=False)
    scorer = UnitTestsScorer(config)
    python = str(scorer.command.interpreter.executable)
    pairs = workload(executions)
    sides = {
        SANDBOXED: lambda: run_sandboxed(scorer, pairs),
        PLAIN: lambda: run_plain([python, "-c"], pairs, concurrency),
        LEAN: lambda: run_plain([python, "-I", "-S", "-c"], pairs, concurrency),
    }
    rates: dict[str, list[float]] = {label: [] for label in sides}
    for repeat in range(repeats):
        order = list(sides) if repeat % 2 == 0 else list(reversed(sides))
        for label in order:
            rates[label].append(sides[label]())
    return python, rates


def run(quick: bool) -> BenchResult:
    """The suite's entry (`tandem bench sandbox`): 64 executions x 5 repetitions, or a smoke run."""
    executions, concurrency, repeats = (12, 4, 2) if quick else (64, 4, 5)
    python, rates = measure(executions, concurrency, repeats)
    why = (
        "Each sandboxed test starts bwrap (new namespaces, read-only mounts, a tmpfs) and a Python with the "
        "audit guard; the baseline starts only the interpreter. What would close it is reusing a sandbox "
        "for several tests of one completion (one bwrap per item, not per test) or a pre-forked "
        "interpreter inside a long-lived sandbox."
    )
    return BenchResult(
        name="sandbox",
        title="sandboxed unit tests vs a bare subprocess",
        method=(
            f"{executions} (completion, test) snippets per repetition at concurrency {concurrency}, with "
            f"{python}: `UnitTestsScorer.score` (bubblewrap, rlimits, the harness's audit guard and verdict, "
            "one sandbox per test) vs `subprocess.run([python, '-c', code + test])` from a thread pool, and "
            "the same with `-I -S` (the flags the sandbox starts Python with). Every sandboxed item must "
            "score 1.0 and every plain run exit 0."
        ),
        comparisons=[
            Comparison(
                name=f"tests/s vs {label}",
                unit="tests/s",
                ours_label=SANDBOXED,
                baseline_label=label,
                ours=rates[SANDBOXED],
                baseline=rates[label],
                target=0.5,
                miss_note=why,
            )
            for label in (PLAIN, LEAN)
        ],
        notes=[
            "`python -c` imports `site` (and the .pth files of the interpreter's site-packages) on every "
            "start; the sandbox does not, so the `-I -S` baseline is the like-for-like one."
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=96, help="test executions per run of each side")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    python, rates = measure(args.executions, args.concurrency, args.repeats)
    print(f"{python}; {args.executions} executions per run, concurrency {args.concurrency}")
    for label, values in rates.items():
        median = statistics.median(values)
        print(
            f"{label:28s} median {median:7.1f} executions/s  (min {min(values):.1f}, max {max(values):.1f})"
        )
    sandboxed, plain, lean = rates.values()
    for label, baseline in (("plain python -c", plain), ("plain python -I -S -c", lean)):
        ratios = [ours / theirs for ours, theirs in zip(sandboxed, baseline, strict=True)]
        spread = f"min {min(ratios):.2f}, max {max(ratios):.2f}"
        print(
            f"ratio sandboxed / {label:22s} median {statistics.median(ratios):.2f} ({spread}); target >= 0.5"
        )


if __name__ == "__main__":
    main()
