"""Checkpoints: DeepSpeed state (module, optimizer, scheduler) + step, policy version, prompt cursor and
the buffer deliveries the checkpoint covers, plus a Hugging Face export (`hf/`) that transformers and
vLLM load directly.

Layout: <run_dir>/checkpoints/step-00000050/{...deepspeed files..., hf/, tandem_state.json}
and DeepSpeed's `latest` file naming the newest tag (unused: loads name their tag). A LoRA policy
(`model.lora`) exports the merged model as `hf/` and the adapter alone as `hf-adapter/` beside it.

Durability: every file of a checkpoint and every directory on its path is fsynced before
`tandem_state.json` (the completion marker) is renamed into place, and the marker's directory after
it, so a checkpoint that looks complete is complete even after a power cut, not only after a kill -9.
Loading tries the newest complete checkpoint and falls back to older ones, with a warning naming the
one that failed and why. After each new checkpoint only the newest `learner.keep_checkpoints` are kept
(`best/` is a copy of an export, not a link to a checkpoint, so pruning never touches it).
"""

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from learner import engine as ds
from learner.lora import is_lora, save_lora_export

log = logging.getLogger(__name__)
MARKER = "tandem_state.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",  # sentencepiece (Llama, Mistral, Gemma)
    "added_tokens.json",
    # transformers >= 4.43 saves the chat template beside tokenizer_config.json: without it the export
    # of an instruct model could not render chat prompts.
    "chat_template.jinja",
    "chat_template.json",
)


@dataclass
class LearnerState:
    """What a resume must restore besides weights and optimizer: counters that define the run's position,
    and `deliveries`, the buffer deliveries (fresh groups) trained since the previous checkpoint. They
    are acknowledged to the buffer only once this checkpoint is durable, and again (a no-op if that
    happened) by a learner that resumes from it, so a crash between the two never trains them twice."""

    step: int = 0
    policy_version: int = 0
    prompt_cursor: dict[str, Any] = field(default_factory=dict)
    deliveries: list[str] = field(default_factory=list)


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def tag_for(step: int) -> str:
    return f"step-{step:08d}"


def save_checkpoint(
    engine: Any,
    state: LearnerState,
    run_dir: Path,
    tokenizer_dir: Path,
    leader: bool = True,
    keep: int | None = None,
) -> Path:
    """Every rank calls this (DeepSpeed writes each rank's ZeRO partition and waits for all); the
    leader then writes the HF export, fsyncs the lot and, last, `tandem_state.json`, which marks the
    checkpoint complete. With `keep`, the leader then deletes all but the newest `keep` checkpoints."""
    tag = tag_for(state.step)
    root = checkpoint_dir(run_dir)
    marker = root / tag / MARKER
    if leader and marker.exists():
        # A checkpoint of this step from a lineage abandoned at a resume (it fell back past it): its
        # marker must not vouch for the half-overwritten files should this save be cut short.
        marker.unlink()
        _fsync_directory(marker.parent)
    ds.save_state(engine, root, tag, client_state=asdict(state))
    with ds.full_parameters(engine):
        if leader:
            export = root / tag / "hf"
            if is_lora(engine.module):  # the merged model here, the adapter beside it (hf-adapter/)
                save_lora_export(engine.module, export)
            else:
                engine.module.save_pretrained(export, safe_serialization=True)
            for name in TOKENIZER_FILES:
                if (tokenizer_dir / name).is_file():
                    shutil.copy2(tokenizer_dir / name, export / name)
            # Other ranks' files are on this file system too (their save returned before ours
            # continued), and fsync flushes a file's pages whichever process wrote them.
            _fsync_tree(root / tag)
            _fsync_directory(root)
            partial = marker.with_suffix(".json.partial")
            with partial.open("w") as handle:
                handle.write(json.dumps(asdict(state), indent=2) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            partial.replace(marker)  # atomic: a kill -9 leaves no half-written marker
            _fsync_directory(marker.parent)  # and the rename itself survives a power cut
            if keep is not None:
                prune_checkpoints(run_dir, keep, newest=state.step)
    return root / tag


def prune_checkpoints(run_dir: Path, keep: int, newest: int) -> list[Path]:
    """Delete every checkpoint but the `keep` newest complete ones up to step `newest` (the one just
    written); returns what was deleted. Also deleted: incomplete directories older than `newest`
    (a save cut short) and any directory past `newest`, which belongs to a lineage abandoned when a
    resume fell back to an older checkpoint: its weights learned from groups since redelivered, so
    resuming from it would train them twice."""
    root = checkpoint_dir(run_dir)
    directories = sorted(path for path in root.glob("step-*") if path.is_dir())
    complete = [path for path in directories if _step(path) <= newest and (path / MARKER).is_file()]
    kept = set(complete[-keep:])
    doomed = [path for path in directories if path not in kept and _step(path) != newest]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
        log.info("deleted checkpoint %s (learner.keep_checkpoints=%d)", path.name, keep)
    if doomed:
        _fsync_directory(root)
    return doomed


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """The complete checkpoints (their `tandem_state.json` written), oldest first."""
    return sorted(path.parent for path in checkpoint_dir(run_dir).glob(f"step-*/{MARKER}"))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (its `tandem_state.json` written), or None."""
    complete = complete_checkpoints(run_dir)
    return complete[-1] if complete else None


def load_checkpoint(engine: Any, run_dir: Path) -> tuple[Path, LearnerState] | None:
    """Restore the newest complete checkpoint that loads into `engine` (every rank calls this); None if
    there is none. One that fails (a truncated or corrupt file, say) is skipped with a warning naming
    it and the reason, and the next older one is tried; if none loads, the last error is raised."""
    candidates = complete_checkpoints(run_dir)
    failure: Exception | None = None
    for path in reversed(candidates):
        try:
            marker = json.loads((path / MARKER).read_text())
            client_state = ds.load_state(engine, checkpoint_dir(run_dir), tag=path.name)
            if client_state is None:
                raise RuntimeError("DeepSpeed found no checkpoint under this tag")
            if int(client_state["step"]) != int(marker["step"]):
                raise RuntimeError(f"DeepSpeed state is step {client_state['step']}, marker {marker['step']}")
        except Exception as error:  # any failure to load is a reason to try the previous one
            failure = error
            log.warning(
                "checkpoint %s does not load (%s: %s); trying the previous one",
                path, type(error).__name__, error,
            )  # fmt: skip
            continue
        return path, LearnerState(
            step=int(client_state["step"]),
            policy_version=int(client_state["policy_version"]),
            prompt_cursor=dict(client_state.get("prompt_cursor") or {}),
            deliveries=[str(i) for i in client_state.get("deliveries") or []],
        )
    if failure is not None:
        raise RuntimeError(f"no checkpoint under {checkpoint_dir(run_dir)} loads") from failure
    return None


def _step(path: Path) -> int:
    try:
        return int(path.name.removeprefix("step-"))
    except ValueError:
        return -1  # not one of ours: never the newest, deleted only as an unkept leftover


def _fsync_tree(directory: Path) -> None:
    """fsync every file under `directory`, then every directory bottom-up (their entries)."""
    for parent, _, files in os.walk(directory, topdown=False):
        for name in files:
            with open(os.path.join(parent, name), "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_directory(Path(parent))


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
