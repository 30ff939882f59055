"""LoRA in the learner (`model.lora`, issue 20): the policy is the frozen base model with a trainable
peft adapter on the target linear layers, W' = W + (alpha / r) B A (Hu et al. 2021, eq. 3).

- Training: only the adapter's A and B require gradients, so the DeepSpeed engine's optimizer holds
  only them (learner/engine.py `create_engine` hands it the parameters that require grad).
- Reference: the same module with the adapter switched off (`disable_adapter`), which computes
  exactly the base model, so the KL reference costs no second copy of the weights
  (`adapter_off_reference`).
- A weight sync sends the adapter alone (`adapter_state_dict`: A, B and alpha / r per target
  weight, core/weight_sync/adapter.py), and each actor merges it into its own pristine copy of the
  base weights: a few MB per version instead of the whole model.
- The HF export is the merged model under the base model's own parameter names
  (`merged_state_dict`): W + (alpha / r) B A per target layer, computed without touching the module
  (merging in place and unmerging would drift W by float round-off at every publish).
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
from core.weight_sync.adapter import AdapterFactor, adapter_payload

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


@torch.no_grad()
def adapter_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a LoRA policy publishes: its adapter's A, B and scaling per target weight, under the base
    model's weight names (core/weight_sync/adapter.py), detached views of the live tensors (the
    transport copies them). A trainable tensor outside the adapter, which the actors would never see,
    is refused."""
    base = model.get_base_model()  # type: ignore[operator]
    factors: dict[str, AdapterFactor] = {}
    covered: set[int] = set()
    for name, module in base.named_modules():
        if not (hasattr(module, "get_delta_weight") and hasattr(module, "base_layer")):
            continue
        (adapter,) = module.active_adapters  # one adapter: `apply_lora` makes exactly one
        a, b = module.lora_A[adapter].weight, module.lora_B[adapter].weight
        covered |= {id(a), id(b)}
        if module.fan_in_fan_out:  # GPT-2's Conv1D keeps W as in x out: (B A)^T = A^T B^T
            a, b = b.T, a.T
        factors[f"{name}.weight"] = AdapterFactor(a.detach(), b.detach(), float(module.scaling[adapter]))
    outside = [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in covered]
    if outside:
        raise ValueError(
            f"trainable tensors outside the LoRA adapter would never reach the actors: {outside[:5]}"
        )
    return adapter_payload(factors)


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
