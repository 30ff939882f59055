"""Checkpoints: DeepSpeed state (module, optimizer, scheduler) + step, policy version and prompt cursor,
plus a Hugging Face export (`hf/`) that transformers and vLLM load directly.

Layout: <run_dir>/checkpoints/step-00000050/{...deepspeed files..., hf/, tandem_state.json}
and DeepSpeed's `latest` file naming the newest tag. The export is written last, so a checkpoint
with `tandem_state.json` is complete.
"""

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from learner import engine as ds

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)


@dataclass
class LearnerState:
    """What a resume must restore besides weights and optimizer: counters that define the run's position."""

    step: int = 0
    policy_version: int = 0
    prompt_cursor: dict[str, Any] = field(default_factory=dict)


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def save_checkpoint(
    engine: Any, state: LearnerState, run_dir: Path, tokenizer_dir: Path, leader: bool = True
) -> Path:
    """Every rank calls this (DeepSpeed writes each rank's ZeRO partition and waits for all); the
    leader then writes the HF export and, last, `tandem_state.json`, which marks the checkpoint complete."""
    tag = f"step-{state.step:08d}"
    root = checkpoint_dir(run_dir)
    ds.save_state(engine, root, tag, client_state=asdict(state))
    with ds.full_parameters(engine):
        if leader:
            export = root / tag / "hf"
            engine.module.save_pretrained(export, safe_serialization=True)
            for name in TOKENIZER_FILES:
                if (tokenizer_dir / name).is_file():
                    shutil.copy2(tokenizer_dir / name, export / name)
            marker = root / tag / "tandem_state.json"
            partial = marker.with_suffix(".json.partial")
            partial.write_text(json.dumps(asdict(state), indent=2) + "\n")
            partial.replace(marker)  # atomic: a kill -9 leaves no half-written marker
    return root / tag


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (its `tandem_state.json` written), or None."""
    complete = sorted(path.parent for path in checkpoint_dir(run_dir).glob("step-*/tandem_state.json"))
    return complete[-1] if complete else None


def load_checkpoint(engine: Any, run_dir: Path) -> tuple[Path, LearnerState] | None:
    """Restore the newest complete checkpoint into `engine` (every rank calls this); None if there is none."""
    latest = latest_checkpoint(run_dir)
    if latest is None:
        return None
    client_state = ds.load_state(engine, checkpoint_dir(run_dir), tag=latest.name)
    if client_state is None:
        raise RuntimeError(f"{latest}: DeepSpeed could not load this checkpoint")
    return latest, LearnerState(
        step=int(client_state["step"]),
        policy_version=int(client_state["policy_version"]),
        prompt_cursor=dict(client_state.get("prompt_cursor") or {}),
    )
