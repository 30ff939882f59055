"""`model`: the policy being trained and the frozen reference it is regularised towards."""

from pathlib import Path
from typing import Literal

from pydantic import Field

from core.config.base import Section


class ModelConfig(Section):
    path: Path = Path("models/tiny-arith")
    """Hugging Face model directory of the initial policy (loadable by transformers and vLLM)."""

    ref_path: Path | None = None
    """Reference model directory for the KL term; None means the initial policy (`path`)."""

    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights dtype in the learner and the actors. float32 keeps log-prob parity exact on CPU."""

    max_prompt_tokens: int = Field(256, gt=0)
    """Prompts longer than this are rejected by the prompt source with the prompt id named."""
