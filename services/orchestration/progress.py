"""The live progress display of `tandem train` (rich): step, rewards, KL, staleness, speed, actors, ETA.

On a terminal it redraws in place; elsewhere (CI, a log file, `make demo | tee`) it prints one plain
line every few seconds instead, so logs stay readable.
"""

import sys
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from core.config import TandemConfig

PLAIN_EVERY_S = 10.0


class Progress:
    def __init__(self, config: TandemConfig, supervisor: Any, enabled: bool | None = None) -> None:
        self.config = config
        self.supervisor = supervisor
        self.live_mode = (config.logging.progress and sys.stdout.isatty()) if enabled is None else enabled
        self.console = Console()
        self.live: Live | None = None
        self._last_plain = 0.0

    def __enter__(self) -> "Progress":
        if self.live_mode:
            self.live = Live(self.render(), console=self.console, refresh_per_second=2, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.update(self.render())
            self.live.__exit__(None, None, None)
        self.line(force=True)

    def update(self) -> None:
        if self.live is not None:
            self.live.update(self.render())
        else:
            self.line()

    def snapshot(self) -> dict[str, str]:
        metrics = self.supervisor.recorder.last_metrics
        last_eval = self.supervisor.recorder.last_eval
        step, max_steps = metrics.get("step", 0), self.config.learner.max_steps
        elapsed = self.supervisor.recorder.elapsed()
        eta = (max_steps - step) * elapsed / step if step else None
        actors = self.supervisor.actor_stats
        return {
            "step": f"{step}/{max_steps}",
            "version": str(metrics.get("policy_version", 0)),
            "reward": _fmt(metrics.get("reward_mean")),
            "eval reward": _fmt(last_eval.get("eval_reward_mean")) + f" @ {last_eval.get('step', '-')}",
            "kl": _fmt(metrics.get("kl"), ".4f"),
            "on-policy": _fmt(metrics.get("on_policy_fraction"), ".2f"),
            "staleness": str(metrics.get("staleness_histogram", {})),
            "learner tok/s": _fmt(metrics.get("tokens_per_s"), ".0f"),
            "actor tok/s": _fmt(sum(a.get("tokens_per_s", 0) or 0 for a in actors), ".0f") if actors else "-",
            "actors": ", ".join(_actor_state(a) for a in actors) or "starting",
            "elapsed": f"{elapsed / 60:.1f} min",
            "eta": f"{eta / 60:.1f} min" if eta is not None else "-",
        }

    def render(self) -> Table:
        table = Table(title=f"tandem train: {self.config.run.name}", show_header=False)
        for key, value in self.snapshot().items():
            table.add_row(key, value)
        return table

    def line(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._last_plain < PLAIN_EVERY_S:
            return
        self._last_plain = time.monotonic()
        snap = self.snapshot()
        keys = ("step", "reward", "eval reward", "kl", "on-policy", "learner tok/s", "actors", "elapsed")
        print(" | ".join(f"{key} {snap[key]}" for key in keys), flush=True)


def _fmt(value: object, spec: str = ".3f") -> str:
    return format(value, spec) if isinstance(value, int | float) else "-"


def _actor_state(stats: dict[str, Any]) -> str:
    if "state" in stats:
        return f"{stats.get('actor_id', '?')}: {stats['state']}"
    return f"v{stats.get('policy_version')} {stats.get('groups_pushed', 0)}g"
