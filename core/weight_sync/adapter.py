"""Adapter-only weight sync for LoRA policies (`model.lora`, issue 20): the payload and its merge.

A LoRA run publishes only the adapter: for each adapted weight W (named as in the base model's
checkpoint, e.g. `model.layers.0.self_attn.q_proj.weight`) three tensors,
    `<W>::lora_A` (r x in), `<W>::lora_B` (out x r), `<W>::lora_scaling` (one float64, alpha / r),
through the same transports, checksums and fingerprints as a full state dict (a `::` never occurs in
a parameter name, so a payload is recognised by its names alone and no transport needs to know).
The actor merges each version into pristine copies of the base weights, W_base + scaling * (B @ A)
(Hu et al. 2021, eq. 3), never into what it holds now: merging into the previous merge would add up
every version's update.

An engine such as vLLM loads weights layer by layer, and a layer that fuses several checkpoint tensors
(q/k/v into `qkv_proj`, gate/up into `gate_up_proj`, with their biases) is only rebuilt once all of
them arrive. `reload_names` therefore widens the adapted weights to every checkpoint tensor of the
engine layers they belong to (the untouched ones are sent as the base has them).
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from core.weight_sync.manifest import WeightSyncError

SEPARATOR = "::"
PARTS = ("lora_A", "lora_B", "lora_scaling")


@dataclass(frozen=True)
class AdapterFactor:
    """One adapted weight's update, scaling * (b @ a), in the base weight's layout (out x in)."""

    a: torch.Tensor  # r x in
    b: torch.Tensor  # out x r
    scaling: float

    def delta(self) -> torch.Tensor:
        # The same operations in the same order as peft's `get_delta_weight`, so a float32 merge
        # here reproduces the learner's merged weights bit for bit.
        return (self.b @ self.a) * self.scaling


def adapter_payload(factors: Mapping[str, AdapterFactor]) -> dict[str, torch.Tensor]:
    """The tensors a LoRA policy publishes, keyed `<weight name>::<part>`."""
    payload = {}
    for weight, factor in factors.items():
        payload[f"{weight}{SEPARATOR}lora_A"] = factor.a
        payload[f"{weight}{SEPARATOR}lora_B"] = factor.b
        payload[f"{weight}{SEPARATOR}lora_scaling"] = torch.tensor([factor.scaling], dtype=torch.float64)
    return payload


def is_adapter_payload(names: Iterable[str]) -> bool:
    """Whether a payload is an adapter; one that mixes adapter and plain tensors is refused."""
    flags = {SEPARATOR in name for name in names}
    if flags == {True, False}:
        raise WeightSyncError("a weight payload mixes adapter tensors (`::lora_*`) with plain weights")
    return flags == {True}


def read_adapter_payload(tensors: Mapping[str, torch.Tensor], version: int) -> dict[str, AdapterFactor]:
    """The factors of a payload, by weight name; raises naming the weight whose parts are missing,
    unknown or of inconsistent shapes."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        weight, _, part = name.rpartition(SEPARATOR)
        if not weight or part not in PARTS:
            raise WeightSyncError(
                f"adapter v{version}: {name!r} is not `<weight>::lora_A|lora_B|lora_scaling`"
            )
        parts.setdefault(weight, {})[part] = tensor
    factors = {}
    for weight, found in parts.items():
        missing = [part for part in PARTS if part not in found]
        if missing:
            raise WeightSyncError(f"adapter v{version}: {weight} lacks {missing}")
        a, b, scaling = found["lora_A"], found["lora_B"], found["lora_scaling"]
        if a.dim() != 2 or b.dim() != 2 or b.shape[1] != a.shape[0] or scaling.numel() != 1:
            raise WeightSyncError(
                f"adapter v{version}: {weight} has lora_A {tuple(a.shape)}, lora_B {tuple(b.shape)}, "
                f"lora_scaling {tuple(scaling.shape)} (expected r x in, out x r and one value)"
            )
        factors[weight] = AdapterFactor(a, b, float(scaling.item()))
    return factors


def merged_weight(base: torch.Tensor, factor: AdapterFactor, weight: str, version: int) -> torch.Tensor:
    """base + scaling * (B @ A), computed in float32 or wider, returned in the base's dtype."""
    if base.shape != (factor.b.shape[0], factor.a.shape[1]):
        raise WeightSyncError(
            f"adapter v{version}: {weight} is {tuple(base.shape)} in the base model, its update "
            f"{factor.b.shape[0]} x {factor.a.shape[1]}"
        )
    return (base.float() + factor.delta().float()).to(base.dtype)


def engine_layer(name: str, packed_modules: Mapping[str, list[str]]) -> str:
    """The engine layer a checkpoint tensor loads into: its module path, with a fused part renamed to
    the fused layer (`...q_proj.weight` -> `...qkv_proj` for packed `{qkv_proj: [q_proj, ...]}`)."""
    module, _, _ = name.rpartition(".")
    parent, _, last = module.rpartition(".")
    for fused, parts in packed_modules.items():
        if last in parts:
            return f"{parent}.{fused}" if parent else fused
    return module


def reload_names(
    adapted: Iterable[str], checkpoint_names: Iterable[str], packed_modules: Mapping[str, list[str]]
) -> list[str]:
    """Every checkpoint tensor sharing an engine layer with an adapted weight (in checkpoint order),
    so each layer the merge changes receives all of its tensors. An adapted weight that the
    checkpoint lacks is an error."""
    names = list(checkpoint_names)
    missing = sorted(set(adapted) - set(names))
    if missing:
        raise WeightSyncError(f"adapted weights {missing[:5]} are not in the base model's checkpoint")
    layers = {engine_layer(name, packed_modules) for name in adapted}
    return [name for name in names if engine_layer(name, packed_modules) in layers]
