"""Poison groups: records the learner cannot train on and would crash on every time they are
delivered again (an embedding lookup past the vocabulary, a sequence past the model's positions, a
row with no prompt to condition on). They are screened where groups enter the buffer (the actor
before its put, offline ingest) and set aside with a reason, instead of entering a stream from which a
crashed learner's recovery hands them out again.

The limits come from the policy's `config.json` (`model.path`), so the check is a pure function of the
group and two numbers. The buffer's own `put` does not screen: it serves every actor (the Ray-served
memory buffer one call at a time), and scanning every token id there would slow each put down for
groups the producers have already screened.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from core.schemas import ScoredGroup

# Where Hugging Face configs keep the context length, by model family.
_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


@dataclass(frozen=True)
class ModelLimits:
    """Token ids must be in [0, vocab_size); prompt + completion at most `max_positions` tokens (None:
    the config names no limit, e.g. a model with relative positions only)."""

    vocab_size: int
    max_positions: int | None = None


def model_limits(model_dir: Path) -> ModelLimits:
    """The limits in `model_dir/config.json`; FileNotFoundError or ValueError when it lacks them."""
    path = Path(model_dir) / "config.json"
    config = json.loads(path.read_text())
    config = config.get("text_config") or config  # multimodal configs nest the language model's
    vocab = config.get("vocab_size")
    if not isinstance(vocab, int) or vocab <= 0:
        raise ValueError(f"{path}: no positive integer 'vocab_size'")
    positions = next((config[key] for key in _POSITION_KEYS if isinstance(config.get(key), int)), None)
    return ModelLimits(vocab_size=vocab, max_positions=positions)


def poison_reason(group: ScoredGroup, limits: ModelLimits) -> str | None:
    """Why the learner could not train on `group`, or None when it can."""
    for index, sample in enumerate(group.samples):
        if len(sample.prompt_token_ids) == 0:
            return f"sample {index} has no prompt tokens (the first completion token has no context)"
        for part, ids in (("prompt", sample.prompt_token_ids), ("completion", sample.completion_token_ids)):
            if len(ids) == 0:
                continue
            low, high = min(ids), max(ids)
            if low < 0 or high >= limits.vocab_size:
                bad = low if low < 0 else high
                return (
                    f"sample {index} has {part} token id {bad} outside the vocabulary "
                    f"[0, {limits.vocab_size})"
                )
        length = len(sample.prompt_token_ids) + len(sample.completion_token_ids)
        if limits.max_positions is not None and length > limits.max_positions:
            return (
                f"sample {index} has {length} tokens (prompt {len(sample.prompt_token_ids)} + completion "
                f"{len(sample.completion_token_ids)}), more than the model's {limits.max_positions} positions"
            )
    return None


def split_poison(
    groups: list[ScoredGroup], limits: ModelLimits | None
) -> tuple[list[ScoredGroup], list[tuple[ScoredGroup, str]]]:
    """The groups the learner can train on, and the others with their reasons (order kept)."""
    if limits is None:
        return list(groups), []
    good: list[ScoredGroup] = []
    poison: list[tuple[ScoredGroup, str]] = []
    for group in groups:
        reason = poison_reason(group, limits)
        if reason is None:
            good.append(group)
        else:
            poison.append((group, reason))
    return good, poison


__all__ = ["ModelLimits", "model_limits", "poison_reason", "split_poison"]
