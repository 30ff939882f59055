"""The benchmark runner behind `tandem bench`: each benchmark in its own process, then one report.

vLLM engines, Ray and DeepSpeed each leave state in the process that started them, so every benchmark
runs in a fresh interpreter (`python benchmarks/suite.py --child NAME --json PATH`), which calls the
module's `run(quick)` and writes its `BenchResult` as JSON; the parent keeps only those files, the
child's log and its wall time. A benchmark that fails or overruns its time limit is reported as such
and the others still run. The report (docs/benchmarks.md) and the raw numbers (docs/benchmarks.json)
are written by `report.py`.
"""

import argparse
import importlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import BenchResult, machine_description, run_in_own_session
from report import write_report

BENCHMARKS_DIR = Path(__file__).resolve().parent
ROOT = BENCHMARKS_DIR.parent

# name -> (module in benchmarks/ [":function", default `run`], time limit in seconds for a full run).
# Listed in report order. `tandem bench peer` (TRL vs Tandem) is not here: see benchmarks/peer_bench.py.
BENCHMARKS: dict[str, tuple[str, float]] = {
    "generation": ("actors_bench", 600),
    "learner": ("learner_bench", 480),
    "weight-sync": ("weight_sync_bench", 600),
    "reward": ("reward_bench", 300),
    "sandbox": ("sandbox_bench", 300),
    "buffer": ("buffer_bench", 180),
    "e2e": ("e2e_bench", 900),
    "e2e-split": ("e2e_bench:run_split", 900),
}

# What the Makefile exports for every command: CPU back-ends unless overridden, never a model hub.
CHILD_ENVIRONMENT = {
    "DS_ACCELERATOR": "cpu",
    "VLLM_TARGET_DEVICE": "cpu",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


@dataclass
class Outcome:
    """One benchmark's run as the parent saw it: the result (None on failure), wall time, log file."""

    name: str
    result: dict[str, Any] | None
    seconds: float
    log: Path
    error: str | None = None
    load_before: list[float] | None = None
    load_after: list[float] | None = None


def run_suite(names: list[str], out: Path, quick: bool, log_dir: Path) -> list[Outcome]:
    """Run the named benchmarks (all when empty) one after another and write the report to `out`."""
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    selected = [name for name in BENCHMARKS if name in names] if names else list(BENCHMARKS)
    log_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_description()
    started = time.monotonic()
    outcomes = []
    for name in selected:
        print(f"[bench] {name} ...", flush=True)
        outcome = run_child(name, quick, log_dir)
        outcomes.append(outcome)
        print(f"[bench] {name}: {describe(outcome)} ({outcome.seconds:.0f} s; log {outcome.log})", flush=True)
    total = time.monotonic() - started
    written = write_report(outcomes, machine, out, quick=quick, total_seconds=total)
    wrote = ", ".join(map(str, written))
    print(f"[bench] {len(outcomes)} benchmark(s) in {total / 60:.1f} min; wrote {wrote}", flush=True)
    return outcomes


def run_child(name: str, quick: bool, log_dir: Path) -> Outcome:
    """Run one benchmark in a fresh interpreter, killing its whole process group past the time limit."""
    _, limit = BENCHMARKS[name]
    log, result_file = log_dir / f"{name}.log", log_dir / f"{name}.json"
    result_file.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__)), "--child", name, "--json", str(result_file)]
    if quick:
        command.append("--quick")
    environment = CHILD_ENVIRONMENT | os.environ
    load_before = list(os.getloadavg())
    started = time.monotonic()
    code = run_in_own_session(command, ROOT, environment, log, limit)
    if code is None:
        error = f"killed after its {limit:.0f} s limit"
    else:
        error = None if code == 0 else f"exited with status {code}"
    seconds = time.monotonic() - started
    result = json.loads(result_file.read_text()) if error is None and result_file.is_file() else None
    if result is None and error is None:
        error = "wrote no result"
    if error is not None:
        error += ": " + " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
    return Outcome(name, result, seconds, log, error, load_before, list(os.getloadavg()))


def describe(outcome: Outcome) -> str:
    if outcome.result is None:
        return f"FAILED {outcome.error}"
    result = BenchResult.from_dict(outcome.result)
    parts = []
    for comparison in result.comparisons:
        ratio = comparison.ratio()
        parts.append(f"{comparison.name} {ratio.median:.2f} [{ratio.low:.2f}-{ratio.high:.2f}]")
    return "; ".join(parts)


def child_main(name: str, result_file: Path, quick: bool) -> None:
    """In the child: import the benchmark module, run it, write its result."""
    target, _ = BENCHMARKS[name]
    module_name, _, function = target.partition(":")
    result = getattr(importlib.import_module(module_name), function or "run")(quick)
    result.quick = quick
    result_file.write_text(json.dumps(result.to_dict(), indent=1))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = ", ".join(BENCHMARKS)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default all): {names}")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--quick", action="store_true", help="small sizes and few repetitions (a smoke run)")
    parser.add_argument("--log-dir", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--child", choices=list(BENCHMARKS), help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.child:
        child_main(arguments.child, arguments.json, arguments.quick)
    else:
        run_suite(arguments.names, arguments.out, arguments.quick, arguments.log_dir)
