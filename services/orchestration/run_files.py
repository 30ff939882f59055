"""The run directory's record of a run: `config.yaml`, `metrics.jsonl`, `eval.jsonl`, TensorBoard events.

Every line is written and flushed as it happens, so a crashed run keeps everything up to its crash, and
a resumed run appends to the same files (each line carries its step and wall-clock time).
"""

import json
import math
import time
from pathlib import Path
from typing import Any

import yaml

from core.config import TandemConfig
from core.redaction import redact_tree

METRICS_FILE = "metrics.jsonl"
EVAL_FILE = "eval.jsonl"
EVENTS_FILE = "events.jsonl"


def resolved_yaml(config: TandemConfig) -> str:
    """The resolved config tree as YAML with every secret masked by the one `redact_tree` (tokens, http
    scorer headers, URL passwords): `config.yaml`, `tandem config show` and what `train`/`learn` print."""
    return yaml.safe_dump(redact_tree(config.model_dump(mode="json")), sort_keys=False)


def write_resolved_config(config: TandemConfig, run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    path.write_text(resolved_yaml(config))
    return path


class RunRecorder:
    """Appends step metrics and eval results; mirrors scalar metrics into TensorBoard when enabled."""

    def __init__(self, run_dir: Path, tensorboard: bool, started_at: float | None = None) -> None:
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.started_at = started_at if started_at is not None else time.time()
        self._metrics = (run_dir / METRICS_FILE).open("a", encoding="utf-8")
        self._eval = (run_dir / EVAL_FILE).open("a", encoding="utf-8")
        self._events = (run_dir / EVENTS_FILE).open("a", encoding="utf-8")
        self._tensorboard = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(str(run_dir / "tensorboard"))
        self.last_metrics: dict[str, Any] = {}
        self.last_eval: dict[str, Any] = {}

    def elapsed(self) -> float:
        return time.time() - self.started_at

    def record_step(self, metrics: dict[str, Any]) -> dict[str, Any]:
        row = {"step": metrics["step"], "elapsed_s": round(self.elapsed(), 3)} | metrics
        self._write(self._metrics, row)
        self._scalars("train", row)
        self.last_metrics = row
        return row

    def record_eval(self, step: int, result: dict[str, Any]) -> dict[str, Any]:
        row = {"step": step, "elapsed_s": round(self.elapsed(), 3)} | result
        self._write(self._eval, row)
        self._scalars("eval", row)
        self.last_eval = row
        return row

    def record_event(self, event: dict[str, Any]) -> None:
        """Things that happen to the run rather than per step: resumed, weights republished, ..."""
        self._write(self._events, {"time": time.time(), "elapsed_s": round(self.elapsed(), 3)} | event)

    def _write(self, handle: Any, row: dict[str, Any]) -> None:
        handle.write(json.dumps(row, default=_json_default) + "\n")
        handle.flush()

    def _scalars(self, prefix: str, row: dict[str, Any]) -> None:
        if self._tensorboard is None:
            return
        for key, value in row.items():
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if key != "step" and numeric and math.isfinite(value):
                self._tensorboard.add_scalar(f"{prefix}/{key}", value, global_step=row["step"])
        self._tensorboard.flush()

    def close(self) -> None:
        self._metrics.close()
        self._eval.close()
        self._events.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _json_default(value: object) -> object:
    if hasattr(value, "item"):
        return value.item()  # a 0-d tensor or numpy scalar that slipped into the metrics
    return str(value)
