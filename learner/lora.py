"""LoRA in the learner (`model.lora`, issue 20): the policy is the frozen base model with a trainable
peft adapter on the target linear layers, W' = W + (alpha / r) B A (Hu et al. 2021, eq. 3).

- Training: only the adapter's A and B require gradients, so the DeepSpeed engine's optimizer holds
  only them (learner/engine.py `create_engine` hands it the parameters that require grad).
- Reference: the same module with the adapter switched off (`disable_adapter`), which computes
  exactly the base model, so the KL reference costs no second copy of the weights
  (`adapter_off_reference`).
- Weights leaving the learner (weight sync, the HF export) are the merged model under the base
  model's own parameter names (`merged_state_dict`): W + (alpha / r) B A per target layer, computed
  without touching the module (merging in place and unmerging would drift W by float round-off at
  every publish). The actors therefore load LoRA policies as ordinary full weights today; sending
  the adapter tensors alone is a later step (the weight transports are not touched here).
- The checkpoint's `hf/` is the merged model (what vLLM and transformers load); `hf-adapter/` beside
  it is the adapter folder peft loads onto the base model (`PeftModel.from_pretrained`).

peft is imported inside the functions: a full fine-tuning run never loads it.
"""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from core.config.model import LoraConfig

ADAPTER_DIR = "hf-adapter"  # beside a checkpoint's hf/ export


def apply_lora(model: torch.nn.Module, lora: LoraConfig) -> torch.nn.Module:
    """`model` wrapped in a peft LoRA adapter (B zero: the wrapped model computes the base model
    exactly); the base weights are frozen. A target name that no linear layer has is a ValueError."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    linear = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if _is_linear(module)}
    missing = sorted(set(lora.target_modules) - linear)
    if missing:
        # peft itself only refuses a list none of whose names match; one misspelt name of seven
        # would silently leave that layer untrained.
        raise ValueError(
            f"model.lora.target_modules: the model has no linear layer named {missing} "
            f"(its linear layers: {sorted(linear)})"
        )
    peft_config = PeftLoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    wrapped = get_peft_model(model, peft_config)
    if lora.dropout > 0:
        # The learner keeps its model in eval mode (no dropout in the base model: learner/engine.py),
        # which would switch the adapter's dropout off too; only those modules train.
        for name, module in wrapped.named_modules():
            if name.rsplit(".", 2)[-2:-1] == ["lora_dropout"]:
                module.training = True
    return wrapped


def is_lora(model: torch.nn.Module) -> bool:
    """Whether `model` is a peft model (a LoRA policy). Without peft imported, no model can be one, so
    a full fine-tuning run never imports it to find out."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The parameters the optimizer updates, by name."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights the policy computes with, under the base model's parameter names: for a LoRA
    policy each target weight plus its adapter's delta (new tensors; the module is unchanged), the
    other tensors as they are; for any other model its `state_dict()`."""
    if not is_lora(model):
        return model.state_dict()
    base = model.get_base_model()
    deltas: dict[str, torch.Tensor] = {}
    for name, module in base.named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
            weight = module.base_layer.weight
            delta = sum(module.get_delta_weight(adapter) for adapter in module.active_adapters)
            deltas[f"{name}.base_layer.weight"] = (weight.float() + delta.float()).to(weight.dtype)
    merged: dict[str, torch.Tensor] = {}
    for key, tensor in base.state_dict().items():
        if ".lora_" in key:
            continue
        merged[key.replace(".base_layer.", ".")] = deltas.get(key, tensor)
    return merged


class AdapterOff(torch.nn.Module):
    """Calls a LoRA policy with its adapter switched off: the base model, sharing its weights."""

    def __init__(self, policy: torch.nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with adapter_disabled(self.policy):
            return self.policy(*args, **kwargs)


@contextmanager
def adapter_disabled(policy: torch.nn.Module) -> Iterator[None]:
    """The policy computes the base model inside (peft's `disable_adapter`)."""
    with policy.disable_adapter():  # type: ignore[operator]
        yield


def save_lora_export(model: torch.nn.Module, export: Path) -> None:
    """The HF export of a LoRA policy: the merged model in `export` (config and safetensors, as a
    full fine-tuning run writes it) and the adapter in `export.parent / ADAPTER_DIR`."""
    model.save_pretrained(export.parent / ADAPTER_DIR, safe_serialization=True)  # adapter files only
    base = model.get_base_model()  # type: ignore[operator]
    state = merged_state_dict(model)
    # The module still holds peft's layers, but the state dict is keyed as the base architecture's.
    base.save_pretrained(export, state_dict=state, safe_serialization=True)


def _is_linear(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"  # GPT-2's linear
