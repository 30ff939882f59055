"""`run`: where a run writes, how long it lasts, how it is seeded and scheduled."""

from pathlib import Path
from typing import Literal

from pydantic import Field

from core.config.base import Section


class RunConfig(Section):
    name: str = Field("tandem", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    """Run name, used in logs, metric labels and Redis key prefixes."""

    run_dir: Path = Path("runs/tandem")
    """Directory for the resolved config, metrics.jsonl, eval.jsonl, TensorBoard events and checkpoints."""

    seed: int = 0
    """Seed for prompt order, sampling and model initialisation; the same seed replays the same run."""

    mode: Literal["async", "sync"] = "async"
    """`async`: actors keep generating within the staleness bound while the learner trains.
    `sync`: generate -> score -> train -> publish in lock-step (for comparison)."""

    max_minutes: float | None = Field(None, gt=0)
    """Wall-clock budget; the run stops with a final checkpoint when it is spent. None: no limit."""

    ray_address: str | None = None
    """Ray cluster to join: None starts a local one sized to this machine; `auto` joins the cluster this
    machine belongs to; `ray://host:10001` or `host:6379` joins a remote head."""
