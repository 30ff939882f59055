"""Loading published weights straight into a running vLLM model's parameters (in a vLLM worker).

vLLM's in-place `reload_weights` is built for every model it serves, quantized ones included: it
puts each layer back on the meta device, counts the bytes each loader copies until the layer is
complete, materialises it, loads it and runs the layer's post-load processing again. For an
unquantized model none of that is needed: the parameters keep the layout they were loaded in, and
`model.load_weights` (the loaders vLLM itself uses at start, which fuse q/k/v and gate/up) writes each
arriving tensor straight into the live parameter. That is how OpenRLHF and verl update their vLLM
engines. On a 1 M-parameter model it takes a fraction of the layerwise reload's time.

One exception, on CPU: vLLM repacks each linear layer's weight for its CPU kernel (oneDNN) after
loading and then drops the weight (`dispatch_cpu_unquantized_gemm(layer, remove_weight=True)`), so
the packed copy is all a layer has. `keep_cpu_linear_weights` (installed when this module is
imported, which vLLM does before it loads the model) keeps the weight beside its packed copy; after a
direct load the packed copy of every layer whose weight changed is rebuilt from it. That costs a
second copy of the linear weights in the engine's memory, on CPU only, and keeps oneDNN's kernels:
`torch.nn.functional.linear` on the plain weight was measured 10-25 % slower per generation batch.

`TANDEM_LAYERWISE_RELOAD=1` in the engine's environment forces vLLM's reload for every load (to compare
the two paths, or to sidestep the direct one for a model it does not serve right); the tests use it.

`can_load_directly` says when the direct path applies (a dense unquantized model with an unquantized
KV cache, every parameter materialised); otherwise the callers fall back to vLLM's `reload_weights`,
which re-runs every layer's post-load processing.
"""

import os
from collections.abc import Iterable
from typing import Any

import torch

_KEPT_WEIGHT_FLAG = "_tandem_keeps_weight"
FORCE_LAYERWISE = "TANDEM_LAYERWISE_RELOAD"


def keep_cpu_linear_weights() -> None:
    """Make vLLM's CPU GEMM dispatch keep each layer's weight (idempotent; a no-op off CPU, where
    vLLM does not repack). Both of vLLM's callers import the function at call time, so replacing the
    module attribute reaches them."""
    from vllm.model_executor.layers import utils

    original = utils.dispatch_cpu_unquantized_gemm
    if getattr(original, _KEPT_WEIGHT_FLAG, False):
        return

    def dispatch_keeping_weight(layer: torch.nn.Module, remove_weight: bool = False) -> None:
        original(layer, remove_weight=False)
        layer._tandem_repack = original  # type: ignore[attr-defined]

    setattr(dispatch_keeping_weight, _KEPT_WEIGHT_FLAG, True)
    utils.dispatch_cpu_unquantized_gemm = dispatch_keeping_weight


def can_load_directly(model: torch.nn.Module, vllm_config: Any) -> bool:
    """Unquantized weights and KV cache, no fused-MoE layer (whose kernels may re-layout their experts
    after loading), and every parameter holding its full tensor (none dropped by a CPU repack)."""
    if os.environ.get(FORCE_LAYERWISE) == "1":
        return False
    if getattr(vllm_config.model_config, "quantization", None) is not None:
        return False
    if getattr(getattr(vllm_config, "cache_config", None), "cache_dtype", "auto") != "auto":
        return False  # an fp8 KV cache's scales are derived after loading
    if any("MoE" in type(module).__name__ for module in model.modules()):
        return False
    return all(parameter.numel() > 0 for parameter in model.parameters())


def load_directly(model: torch.nn.Module, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
    """Write `weights` (checkpoint names) into the model's parameters with vLLM's own loaders, then
    rebuild the CPU kernels' packed copy of every layer whose weight storage changed (a tied LM head
    shares the embedding's). Returns the names vLLM reports loaded."""
    loaded = set(model.load_weights(weights))
    parameters = dict(model.named_parameters())
    changed = {parameters[name].data_ptr() for name in loaded if name in parameters}
    for module in model.modules():
        repack = getattr(module, "_tandem_repack", None)
        weight = getattr(module, "weight", None)
        if repack is not None and isinstance(weight, torch.Tensor) and weight.data_ptr() in changed:
            repack(module, remove_weight=False)
    return loaded
