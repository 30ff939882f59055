"""What one generate call asks for: the prompts and how to sample them (no vLLM import, so the
rollout loop and its tests can use these without starting an engine)."""

from dataclasses import dataclass

from core.tokenization import RenderedPrompt


@dataclass(frozen=True)
class SamplingSettings:
    """How completions are sampled; `seed` makes a call reproducible on the same weights."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class PromptRequest:
    prompt_id: str
    prompt: str | RenderedPrompt  # text, or a chat prompt already rendered to ids (core/tokenization.py)
