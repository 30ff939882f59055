"""`model`: the policy being trained, the frozen reference it is regularised towards, and an optional
LoRA adapter (`model.lora`) that is trained instead of the full weights."""

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from core.config.base import Section


class LoraConfig(Section):
    """A LoRA adapter (Hu et al. 2021, peft): W' = W + (alpha / rank) * B A on each target module, with
    B zero at the start, so the initial policy is the base model exactly."""

    rank: int = Field(8, gt=0)
    """Rank r of the update B A (B: out x r, A: r x in)."""

    alpha: float = Field(16.0, gt=0)
    """Scale of the update, applied as alpha / rank."""

    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the adapter's input in training. 0 keeps the learner's log-probs equal to the
    actors' for the same weights, which the importance weights and the log-prob parity rely on."""

    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
    )
    """Names (last component) of the linear layers that get an adapter; the default covers the
    attention and MLP projections of Llama/Qwen-style models. A name no layer has is an error at
    learner start."""


class ModelConfig(Section):
    path: Path = Path("models/tiny-arith")
    """Hugging Face model directory of the initial policy (loadable by transformers and vLLM)."""

    ref_path: Path | None = None
    """Reference model directory for the KL term; None means the initial policy (`path`)."""

    reference_on: Literal["learner", "actors"] = "learner"
    """Where the reference log-probs for the KL term are computed. `learner`: a forward pass of the
    reference in each training step. `actors`: each generator actor loads the reference too and
    stamps every sample with its reference log-prob before the push (core/reference_model.py), which
    takes that pass off the learner's critical path when actors and learner run on separate hardware
    (OpenRLHF likewise runs its reference beside generation), at the cost of the reference's memory on
    the actors' devices. The learner still computes what an actor did not stamp with its own
    reference (offline groups, groups from before a change of `ref_path`)."""

    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights dtype in the learner and the actors. float32 keeps log-prob parity exact on CPU."""

    max_prompt_tokens: int = Field(256, gt=0)
    """Prompts longer than this are rejected by the prompt source with the prompt id named."""

    lora: LoraConfig | None = None
    """Train a LoRA adapter on the frozen `path` weights instead of the full model (peft); the
    reference is then `path` itself, read by switching the adapter off (no second copy in memory).
    None: full fine-tuning. `--set model.lora.rank=8` turns it on with the other defaults."""

    @model_validator(mode="after")
    def _lora_reference_is_the_base(self) -> "ModelConfig":
        # With an adapter the reference is the base model under it (adapter off): a separate
        # `ref_path` would need the second copy in memory that LoRA is meant to save.
        if self.lora is not None and self.ref_path is not None and self.ref_path != self.path:
            raise ValueError(
                f"model.lora with model.ref_path={self.ref_path}: with LoRA the reference is the base "
                "model (model.path) with the adapter switched off; unset model.ref_path"
            )
        return self
