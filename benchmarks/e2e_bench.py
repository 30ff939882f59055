"""End to end: learner steps per minute and the eval reward reached, `async` vs `sync`, same time budget.

Runs `tandem train --config configs/demo.yaml` twice, one after the other, each in a fresh process
(Ray and vLLM want clean ones) with the same `run.max_minutes`, `learner.max_steps` lifted so the
budget ends both runs, and its own run directory. Read back from each run directory:
  steps/min   over the same training span in both runs (from each run's first step, as long as fits
              both budgets: startup varies with the machine's load), cut into equal windows paired by
              index, which gives the ratio a spread; steps over the whole budget are reported too
  eval reward the final evaluation (greedy, 200 held-out prompts, on the final weights) from eval.jsonl,
              and the last one recorded within the matched span
Targets: async >= 1.5x the steps of sync, and no worse eval reward. A benchmark, not a test: nothing
fails on a figure. `tandem bench e2e` calls `run(quick)`.

Both modes run the demo config unchanged apart from the budget: sync mode's lock-step round
(`run_sync` in services/orchestration/driver.py) generates a step's worth of groups only when the
buffer lacks them, trains one step, publishes, and repeats.

    .venv/bin/python benchmarks/e2e_bench.py [--minutes 3] [--windows 4]
"""

import argparse
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from services.orchestration.run_files import read_jsonl

from harness import BenchResult, Comparison

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "demo.yaml"
MODES = ("async", "sync")
EVAL_KEYS = ("final_eval_reward", "span_eval_reward")


def train(mode: str, minutes: float, run_dir: Path, log: Path) -> float:
    """One `tandem train` run in its own process session; returns its wall time in seconds."""
    overrides = [f"run.mode={mode}", f"run.max_minutes={minutes}", "learner.max_steps=1000000"]
    command = [sys.executable, "-m", "services.cli", "train", "--config", str(CONFIG)]
    command += ["--run-dir", str(run_dir), "--no-progress"]
    for override in overrides:
        command += ["--set", override]
    started = time.monotonic()
    with log.open("w") as handle:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            # Startup, the final evaluation and shutdown come on top of the budget.
            code = process.wait(timeout=60 * minutes + 240)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise RuntimeError(f"{mode} run overran its budget by 4 minutes; see {log}") from None
    if code != 0:
        raise RuntimeError(f"{mode} run exited with status {code}; see {log}")
    return time.monotonic() - started


def window_rates(elapsed: list[float], start: float, span_s: float, windows: int) -> list[float]:
    """Steps per minute in each of `windows` equal slices of [start, start + span_s]."""
    width = span_s / windows
    counts = [0] * windows
    for moment in elapsed:
        if start <= moment <= start + span_s:
            counts[min(int((moment - start) / width), windows - 1)] += 1
    return [60 * count / width for count in counts]


def read_run(run_dir: Path, budget_s: float) -> dict[str, Any]:
    """A finished run's step times (those inside the budget) and evaluations."""
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    evals = read_jsonl(run_dir / "eval.jsonl")
    # The step in flight when the budget ran out may land just after it.
    elapsed = [row["elapsed_s"] for row in metrics if row["elapsed_s"] <= budget_s]
    if not elapsed or not evals:
        raise RuntimeError(f"{run_dir} recorded no step inside the budget or no evaluation")
    return {"elapsed": elapsed, "evals": evals, "first_step_s": elapsed[0]}


def summarise(runs: dict[str, dict[str, Any]], budget_s: float, windows: int) -> dict[str, dict[str, Any]]:
    """Per mode: figures over the whole budget, and over the training span both runs had.

    Startup (Ray, the reward server, a vLLM engine) takes 30 s to minutes on a loaded machine and
    varies from run to run, so the modes are also compared over the same span measured from each
    run's first step: the longest one that fits inside both budgets.
    """
    span = min(budget_s - run["first_step_s"] for run in runs.values())
    summary = {}
    for mode, run in runs.items():
        start, evals = run["first_step_s"], run["evals"]
        within = [row for row in evals if row["elapsed_s"] <= start + span]
        matched = within[-1] if within else evals[0]
        summary[mode] = {
            "steps_in_budget": len(run["elapsed"]),
            "steps_per_min_over_budget": 60 * len(run["elapsed"]) / budget_s,
            "first_step_s": start,
            "span_s": span,
            "steps_in_span": sum(start <= moment <= start + span for moment in run["elapsed"]),
            "window_steps_per_min": window_rates(run["elapsed"], start, span, windows),
            "final_eval_reward": evals[-1]["eval_reward_mean"],
            "final_eval_step": evals[-1]["step"],
            "eval_items": evals[-1]["eval_items"],
            "span_eval_reward": matched["eval_reward_mean"],
            "span_eval_step": matched["step"],
            "eval_curve": {row["step"]: row["eval_reward_mean"] for row in evals},
            "wall_s": run["wall_s"],
        }
    return summary


def measure(minutes: float, windows: int, scratch: Path) -> dict[str, dict[str, Any]]:
    runs = {}
    for mode in MODES:
        run_dir = scratch / mode
        wall = train(mode, minutes, run_dir, scratch / f"{mode}.log")
        runs[mode] = read_run(run_dir, 60 * minutes) | {"wall_s": wall}
    return summarise(runs, 60 * minutes, windows)


def binomial_half_width(reward: float, items: int) -> float:
    """Half-width of a 95 % interval of a mean of `items` 0/1 rewards (exact-match scores)."""
    return 1.96 * math.sqrt(max(reward * (1 - reward), 1e-9) / items)


def reward_note(fast: float, slow: float, width: float) -> str:
    """Why async's final reward can fall below sync's, given the evaluation's own noise."""
    if slow - fast <= width:
        return (
            f"Async's {fast:.3f} is below sync's {slow:.3f} by less than the +-{width:.2f} interval of one "
            "200-prompt evaluation, so the two are not told apart; repeated runs per mode (or a larger "
            "eval set) would separate a real difference from one run's luck."
        )
    return (
        f"Async's {fast:.3f} is below sync's {slow:.3f} by more than the +-{width:.2f} evaluation "
        "interval: async trains on groups up to `buffer.max_staleness` versions old and replays, which "
        "the same number of minutes may not make up for; a longer budget, a tighter staleness bound or "
        "more on-policy data would test which."
    )


def run(quick: bool) -> BenchResult:
    """The suite's entry: 3 minutes per mode, or 1 minute each for a smoke run."""
    minutes, windows = (1.0, 2) if quick else (3.0, 4)
    with tempfile.TemporaryDirectory(prefix="tandem-e2e-bench-") as scratch:
        runs = measure(minutes, windows, Path(scratch))
    fast, slow = runs["async"], runs["sync"]
    items = fast["eval_items"]
    width = max(binomial_half_width(run[key], items) for run in runs.values() for key in EVAL_KEYS)
    spread = f"one run per mode; an eval mean has a 95 % interval of about +-{width:.2f} over {items} prompts"
    return BenchResult(
        name="e2e",
        title="async vs sync on the demo config, same wall-clock budget",
        method=(
            f"`tandem train --config configs/demo.yaml` with `run.max_minutes={minutes:g}` and "
            "`learner.max_steps` lifted, once per mode, one after the other in fresh processes. "
            "Startup varies from run to run on a loaded machine, so steps are compared over the same "
            f"training span in both runs ({fast['span_s']:.0f} s from each run's first step: the longest "
            f"that fits both budgets), cut into {windows} equal windows paired by index. Eval reward: the "
            "greedy evaluation on the 200 held-out prompts, at the end of the budget (the final one, on "
            "the final weights) and the last one recorded within the matched span."
        ),
        comparisons=[
            Comparison(
                name="learner steps/min, same training span (per window)",
                unit="steps/min",
                ours_label="async",
                baseline_label="sync",
                ours=fast["window_steps_per_min"],
                baseline=slow["window_steps_per_min"],
                target=1.5,
                miss_note=(
                    "On two cores the actor's vLLM engine, the reward server and the learner compete for "
                    "the same CPUs (and here with other jobs), so overlapping generation with training "
                    "has little idle CPU to fill: async removes the waiting, not the work. On a machine "
                    "where actors and learner have their own cores, as in a real deployment, the overlap "
                    "is what async buys."
                ),
            ),
            *(
                Comparison(
                    name=name,
                    unit="reward",
                    ours_label="async",
                    baseline_label="sync",
                    ours=[fast[key]],
                    baseline=[slow[key]],
                    target=1.0,
                    spread_note=spread,
                    miss_note=reward_note(fast[key], slow[key], width),
                )
                for name, key in (
                    ("final eval reward, same wall-clock budget", "final_eval_reward"),
                    ("eval reward, same training span", "span_eval_reward"),
                )
            ),
        ],
        figures={
            f"{mode}": {
                "first step at s": round(found["first_step_s"], 1),
                "steps in budget": found["steps_in_budget"],
                "steps/min over the whole budget": round(found["steps_per_min_over_budget"], 1),
                "steps in the matched span": found["steps_in_span"],
                "final eval reward": found["final_eval_reward"],
                "final eval at step": found["final_eval_step"],
                "last eval in the span at step": found["span_eval_step"],
                "wall s": round(found["wall_s"], 1),
            }
            for mode, found in runs.items()
        }
        | {f"{mode} eval curve (step: reward)": found["eval_curve"] for mode, found in runs.items()},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="budget per mode")
    parser.add_argument("--windows", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tandem-e2e-bench-") as scratch:
        runs = measure(args.minutes, args.windows, Path(scratch))
    for mode, found in runs.items():
        rates = ", ".join(f"{rate:.0f}" for rate in found["window_steps_per_min"])
        print(
            f"{mode:5s}: {found['steps_in_budget']} steps in {args.minutes:g} min, "
            f"{found['steps_in_span']} in the matched {found['span_s']:.0f} s (per window {rates}/min); "
            f"final eval reward {found['final_eval_reward']:.3f} at step {found['final_eval_step']}"
        )
    ratio = runs["async"]["steps_in_span"] / runs["sync"]["steps_in_span"]
    print(f"steps ratio async/sync over the matched span: {ratio:.2f} (target >= 1.5)")


if __name__ == "__main__":
    main()
