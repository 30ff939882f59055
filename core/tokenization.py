"""How a policy's tokenizer turns text into the token ids Tandem trains on: one definition for the
generation actors and for offline data (`tandem ingest`, `buffer.offline_files`).

A row's log-prob is taken over exactly these ids, so offline rows must be tokenised as actor rows are
or the learner compares unlike things:
- prompt: vLLM renders a text prompt as `tokenizer(prompt, add_special_tokens=True)["input_ids"]`
  (vllm/renderers: the completion defaults have `add_special_tokens=True`), so a tokenizer that adds
  BOS puts it in the prompt. The actor now hands vLLM these ids itself (actors/engine.py), so the two
  paths are one function, not two that happen to agree.
- chat prompt (`messages`): rendered once by the tokenizer's chat template with
  `add_generation_prompt=True`, then tokenised without special tokens, as transformers'
  `apply_chat_template(tokenize=True)` and vLLM's chat path do (the template writes BOS itself). The
  actor renders a record once (`render_chat`) and carries the `RenderedPrompt` from there: its ids go
  to vLLM (`prompt_token_ids` hands them back unchanged) and so into the samples the learner trains
  on, its text to the reward server; offline ingest renders with the same function.
- completion: the text's tokens with no special tokens, then EOS, because an actor's sample that
  ended on its own ends with the EOS token vLLM sampled. A completion cut off by a length limit has
  no EOS (`truncated`), as an actor's sample stopped by `max_tokens` has none.

`has_chat_template` reads only the model folder's files (standard library), for pre-flight checks.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


class TextTokenizer(Protocol):
    """What is used of a Hugging Face tokenizer (vLLM's tokenizer wrapper answers the same calls)."""

    eos_token_id: int | None

    def __call__(self, text: str, add_special_tokens: bool = True) -> Any: ...


class ChatTokenizer(TextTokenizer, Protocol):
    """A tokenizer that may have a chat template (None when it has none)."""

    chat_template: Any

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...


class ChatTemplateError(ValueError):
    """Chat prompts for a model whose tokenizer has no chat template, or that its template refuses;
    the message names the model."""


@dataclass(frozen=True)
class RenderedPrompt:
    """A chat prompt rendered by the policy's chat template: the text the reward server sees and the
    token ids vLLM, the samples and the learner use (ids computed once, never re-derived from text)."""

    text: str
    token_ids: tuple[int, ...]


def prompt_token_ids(tokenizer: TextTokenizer, prompt: "str | RenderedPrompt") -> list[int]:
    """The prompt's ids as vLLM tokenises a text prompt: with the tokenizer's special tokens (BOS).
    A chat prompt already rendered keeps the ids it was rendered to."""
    if isinstance(prompt, RenderedPrompt):
        return list(prompt.token_ids)
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


def require_chat_template(tokenizer: ChatTokenizer, model: str | Path) -> None:
    """Raise ChatTemplateError unless the tokenizer of `model` has a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            f"the tokenizer of {model} has no chat template, so it cannot render prompts given as "
            "'messages': give text prompts ('prompt'), or a model whose tokenizer_config.json has a "
            "'chat_template' (or a chat_template.jinja)"
        )


def render_chat(
    tokenizer: ChatTokenizer, messages: Sequence[dict[str, str]], model: str | Path
) -> RenderedPrompt:
    """`messages` rendered by the chat template with the assistant's turn opened, and its ids."""
    require_chat_template(tokenizer, model)
    try:
        text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    except Exception as error:  # jinja2's TemplateError, raise_exception() in a template, a bad key
        raise ChatTemplateError(f"the chat template of {model} refused the messages: {error}") from None
    # Without special tokens: the template wrote them (transformers and vLLM tokenise it so).
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return RenderedPrompt(text, tuple(int(i) for i in ids))


class ChatRenderer:
    """The policy's chat template bound to its tokenizer; errors name `model` (its folder)."""

    def __init__(self, tokenizer: ChatTokenizer, model: str | Path) -> None:
        self.tokenizer = tokenizer
        self.model = model

    def require_template(self) -> None:
        """Raise ChatTemplateError now (at start) rather than at the first chat prompt."""
        require_chat_template(self.tokenizer, self.model)

    def __call__(self, messages: Sequence[dict[str, str]]) -> RenderedPrompt:
        return render_chat(self.tokenizer, messages, self.model)


def has_chat_template(model_dir: Path) -> bool:
    """Whether the tokenizer saved in `model_dir` has a chat template, read from its files only:
    `chat_template` in tokenizer_config.json, or chat_template.jinja / chat_template.json beside it
    (where transformers >= 4.43 saves it)."""
    if (model_dir / "chat_template.jinja").is_file() or (model_dir / "chat_template.json").is_file():
        return True
    config = model_dir / "tokenizer_config.json"
    try:
        data = json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and bool(data.get("chat_template"))


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


def load_tokenizer(directory: Path) -> ChatTokenizer:
    """The Hugging Face tokenizer saved in `directory` (a model directory or a tokenizer alone)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory)
