"""How a policy's tokenizer turns text into the token ids Tandem trains on: one definition for the
generation actors and for offline data (`tandem ingest`, `buffer.offline_files`).

A row's log-prob is taken over exactly these ids, so offline rows must be tokenised as actor rows are
or the learner compares unlike things:
- prompt: vLLM renders a text prompt as `tokenizer(prompt, add_special_tokens=True)["input_ids"]`
  (vllm/renderers: the completion defaults have `add_special_tokens=True`), so a tokenizer that adds
  BOS puts it in the prompt. The actor now hands vLLM these ids itself (actors/engine.py), so the two
  paths are one function, not two that happen to agree.
- completion: the text's tokens with no special tokens, then EOS, because an actor's sample that
  ended on its own ends with the EOS token vLLM sampled. A completion cut off by a length limit has
  no EOS (`truncated`), as an actor's sample stopped by `max_tokens` has none.
"""

from pathlib import Path
from typing import Any, Protocol


class TextTokenizer(Protocol):
    """What is used of a Hugging Face tokenizer (vLLM's tokenizer wrapper answers the same calls)."""

    eos_token_id: int | None

    def __call__(self, text: str, add_special_tokens: bool = True) -> Any: ...


def prompt_token_ids(tokenizer: TextTokenizer, prompt: str) -> list[int]:
    """The prompt's ids as vLLM tokenises a text prompt: with the tokenizer's special tokens (BOS)."""
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


def completion_token_ids(tokenizer: TextTokenizer, completion: str, truncated: bool = False) -> list[int]:
    """The completion's ids, ending with EOS unless it was `truncated` (cut off before its end)."""
    ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
    if truncated:
        return ids
    if tokenizer.eos_token_id is None:
        raise ValueError(
            'the tokenizer has no EOS token: mark the completions "truncated": true, or give token ids'
        )
    return [*ids, int(tokenizer.eos_token_id)]


def load_tokenizer(directory: Path) -> TextTokenizer:
    """The Hugging Face tokenizer saved in `directory` (a model directory or a tokenizer alone)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory)
