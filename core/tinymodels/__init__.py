"""Tiny models built from nothing (no model hub is reachable): tokenizer, tasks, policy, reward model."""

from typing import Literal

# Here, not in tokenizer.py, so the CLI can offer the choice without importing transformers.
TokenizerKind = Literal["char", "bpe"]
TOKENIZER_KINDS: tuple[TokenizerKind, ...] = ("char", "bpe")
