"""`reward_curve.png`: train and eval reward against learner step and against wall-clock time.

Drawn from `metrics.jsonl` and `eval.jsonl` alone, so `tandem plot RUN_DIR` redraws it for any run,
finished, crashed or still going.
"""

from pathlib import Path

from services.orchestration.run_files import EVAL_FILE, METRICS_FILE, read_jsonl


def plot_reward_curve(run_dir: Path, out: Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    metrics = read_jsonl(run_dir / METRICS_FILE)
    evals = [row for row in read_jsonl(run_dir / EVAL_FILE) if row.get("eval_reward_mean") is not None]
    if not metrics and not evals:
        raise FileNotFoundError(f"{run_dir}: no {METRICS_FILE} or {EVAL_FILE} rows to plot")
    figure, (by_step, by_time) = plt.subplots(1, 2, figsize=(11, 4))
    for axis, x_key, label in ((by_step, "step", "learner step"), (by_time, "elapsed_s", "wall-clock (s)")):
        train = [row for row in metrics if row.get("reward_mean") is not None]
        axis.plot(
            [r[x_key] for r in train], [r["reward_mean"] for r in train], label="train reward", alpha=0.6
        )
        axis.plot(
            [r[x_key] for r in evals],
            [r["eval_reward_mean"] for r in evals],
            "o-",
            label="eval reward (greedy)",
        )
        axis.set_xlabel(label)
        axis.set_ylabel("reward")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(f"Tandem run {run_dir.name}")
    figure.tight_layout()
    out = out or run_dir / "reward_curve.png"
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out
