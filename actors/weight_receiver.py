"""Loading published weights into a running vLLM engine, verified where they land.

`WeightReceiverExtension` is mixed into vLLM's worker (engine arg `worker_extension_cls`) and is
called through `LLM.collective_rpc`, vLLM's supported control path into its workers. It receives the
manifest and the path of the safetensors blob (staged by actors/engine.py: a path crosses the
control path in microseconds, the blob took seconds), checks every tensor's checksum, reloads the
weights in place with the worker's `reload_weights`, then reads back every parameter that vLLM
keeps under its checkpoint name (norms, output projections, embeddings: everything but the fused
q/k/v and gate/up) and compares it with what was published. Any mismatch raises with both versions
named: a generator must never keep generating from old weights while reporting a new version.
The `collective` transport's streaming load (actors/weight_stream.py) is mixed into the same class.

A LoRA run publishes its adapter alone (core/weight_sync/adapter.py). Verified the same way (checksums
or fingerprints of what was sent), it is merged into the base weights of the layers it adapts
(actors/adapter_merge.py) and those layers alone are reloaded. vLLM's reload then says of every other
layer `Failed to load weights` (and lists their tensors as not loaded): it logs that only for a layer
that received no tensor, which keeps its current weights, the base's. Those messages are expected in
an adapter load and counted (`untouched_layers`), not reported; a layer the merge sends receives all
of its tensors (`reload_names`), so it never lands half-loaded.

vLLM's in-place reload logs `RotaryEmbedding: Failed to load weights` on every load, and it is
harmless: the layerwise reload (vllm/model_executor/model_loader/reload/layerwise.py,
`finalize_layerwise_processing`) counts a layer's buffers as loadable, and the rotary embedding's only
tensor is its `cos_sin_cache`, a non-persistent buffer computed from the config that no checkpoint
contains. vLLM then puts the layer's original cache back (`_place_kernel_tensors`), which is exactly
right: the cache does not depend on the weights. Its cause is in vLLM's accounting, not in what we
send (sending the cache would mean publishing a buffer the learner does not have), so
`reload_warnings` filters that one message, for rotary layers only: a warning about a layer with real
weights still shows, and is reported back to the actor.
"""

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from actors.adapter_merge import AdapterMerger
from actors.direct_load import can_load_directly, keep_cpu_linear_weights, load_directly
from actors.weight_stream import CollectiveLoadMixin
from core.weight_sync.adapter import is_adapter_payload, read_adapter_payload
from core.weight_sync.manifest import WeightManifest, WeightSyncError, load_verified_file

EXTENSION_QUALNAME = "actors.weight_receiver.WeightReceiverExtension"
RELOAD_LOGGER = "vllm.model_executor.model_loader.reload.layerwise"
INPLACE_LOGGER = "vllm.model_executor.model_loader.reload.inplace"
FAILED_LAYER = "%s: Failed to load weights"
NOT_LOADED = "Following weights were not loaded from checkpoint: %s"


class _RotaryReloadFilter(logging.Filter):
    """Drops vLLM's `<layer>: Failed to load weights` for rotary embeddings (see the module docstring),
    counting what it dropped: a load's report says how many, so a test can tell the filter still has
    something to do (a vLLM that stops logging it would make this filter dead code)."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != FAILED_LAYER or not record.args:
            return True
        if not str(record.args[0]).endswith("RotaryEmbedding"):
            return True
        self.dropped += 1
        return False


class _UntouchedLayersFilter(logging.Filter):
    """Drops, during an adapter load only, vLLM's messages about layers that received no tensor (see
    the module docstring), counting the layers."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = 0

    def filter(self, record: logging.LogRecord) -> bool:
        self.layers += record.msg == FAILED_LAYER
        return record.msg not in (FAILED_LAYER, NOT_LOADED)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@dataclass
class ReloadWarnings:
    """What vLLM's reload logged during one load: the warnings kept, and the harmless rotary ones
    dropped (filled in when the load ends)."""

    messages: list[str] = field(default_factory=list)
    rotary_dropped: int = 0
    untouched_layers: int = 0


@contextmanager
def reload_warnings(partial: bool = False) -> Iterator[ReloadWarnings]:
    """The warnings vLLM's in-place reload logs meanwhile (after the rotary filter), so the load's
    report carries them back to the actor, which runs in another process than the worker. `partial`:
    an adapter load, which sends some layers only (the others' messages are counted, not kept)."""
    logger = logging.getLogger(RELOAD_LOGGER)
    untouched = _UntouchedLayersFilter()
    partial_loggers = [logger, logging.getLogger(INPLACE_LOGGER)] if partial else []
    rotary = next((f for f in logger.filters if isinstance(f, _RotaryReloadFilter)), None)
    if rotary is None:
        rotary = _RotaryReloadFilter()
        logger.addFilter(rotary)
    handler = _Collect()
    found = ReloadWarnings(handler.messages)
    dropped_before = rotary.dropped
    logger.addHandler(handler)
    for each in partial_loggers:
        each.addFilter(untouched)  # after the rotary filter, which thus still counts its own
    try:
        yield found
    finally:
        logger.removeHandler(handler)
        for each in partial_loggers:
            each.removeFilter(untouched)
        found.rotary_dropped = rotary.dropped - dropped_before
        found.untouched_layers = untouched.layers


class WeightReceiverExtension(CollectiveLoadMixin):
    """Methods added to each vLLM worker. `self` is the worker (it has `model_runner`, `reload_weights`).

    Loading is two calls: `stage` verifies checksums and that every tensor fits a parameter, touching
    nothing; `commit` then reloads the staged tensors. A bad payload is thus refused before any
    weight changes; only a failure inside vLLM's own reload can leave the engine in between.
    """

    _tandem_staged: tuple[WeightManifest, dict[str, torch.Tensor], bool] | None = None
    _tandem_merger: AdapterMerger | None = None

    def tandem_stage_weights(self, manifest_json: str, blob_path: str) -> dict[str, Any]:
        manifest = WeightManifest.from_json(manifest_json)
        tensors = load_verified_file(manifest, Path(blob_path))  # raises on any checksum mismatch
        adapter = is_adapter_payload(tensors)
        if adapter:  # merged here, so a bad adapter is refused before any weight changes
            tensors = self._tandem_merge_adapter(tensors, manifest.version)
        check_fits(self.model_runner.get_model(), tensors, manifest.version)  # type: ignore[attr-defined]
        self._tandem_staged = (manifest, tensors, adapter)
        return {"version": manifest.version, "digest": manifest.digest}

    def tandem_commit_weights(self, version: int) -> dict[str, Any]:
        if self._tandem_staged is None or self._tandem_staged[0].version != version:
            staged = None if self._tandem_staged is None else self._tandem_staged[0].version
            raise WeightSyncError(f"commit of weights v{version} but v{staged} is staged")
        manifest, tensors, adapter = self._tandem_staged
        self._tandem_staged = None
        model = self.model_runner.get_model()  # type: ignore[attr-defined]
        dtype = next(model.parameters()).dtype
        warnings, path = load_in_place(
            self, ((name, tensor.to(dtype)) for name, tensor in tensors.items()), partial=adapter
        )
        checked = _compare_loaded(model, tensors, manifest.version, require_match=not adapter)
        return {"version": manifest.version, "digest": manifest.digest, "checked_tensors": checked,
                "reload_warnings": warnings.messages, "rotary_dropped": warnings.rotary_dropped,
                "adapter": adapter, "untouched_layers": warnings.untouched_layers,
                "load_path": path}  # fmt: skip

    def _tandem_merge_adapter(
        self, tensors: dict[str, torch.Tensor], version: int
    ) -> dict[str, torch.Tensor]:
        """A verified adapter payload as full tensors of the layers it adapts (actors/adapter_merge.py),
        merged into the base of the model folder this engine was started from."""
        if self._tandem_merger is None:
            model = self.model_runner.get_model()  # type: ignore[attr-defined]
            packed = getattr(model, "packed_modules_mapping", {}) or {}
            model_dir = Path(self.vllm_config.model_config.model)  # type: ignore[attr-defined]
            self._tandem_merger = AdapterMerger(model_dir, packed, next(model.parameters()).dtype)
        return self._tandem_merger.merge(read_adapter_payload(tensors, version), version)

    def tandem_parameter_digest(self) -> str:
        """A digest of the engine's current parameters (changes whenever a load changed anything)."""
        model = self.model_runner.get_model()  # type: ignore[attr-defined]
        digest = hashlib.blake2b(digest_size=16)
        for name, parameter in sorted(model.named_parameters()):
            digest.update(name.encode())
            digest.update(parameter.detach().float().cpu().numpy().tobytes())
        return digest.hexdigest()


def load_in_place(
    worker: Any, weights: Iterator[tuple[str, torch.Tensor]], partial: bool
) -> tuple[ReloadWarnings, str]:
    """Load `weights` into the worker's running model: straight into its parameters where that is
    exact (actors/direct_load.py: an unquantized model), else with vLLM's layerwise `reload_weights`.
    Returns what vLLM's reload warned about and which path loaded ("direct" or "layerwise")."""
    model = worker.model_runner.get_model()
    if can_load_directly(model, worker.vllm_config):
        load_directly(model, weights)
        return ReloadWarnings(), "direct"
    with reload_warnings(partial=partial) as warnings:
        worker.reload_weights(weights_iterator=weights)
    return warnings, "layerwise"


def check_fits(model: torch.nn.Module, tensors: dict[str, torch.Tensor], version: int) -> None:
    """Every published tensor must name an engine parameter (directly, or through the model's packed
    modules such as q/k/v -> qkv_proj); 1-D ones must also have the engine's shape."""
    parameters = dict(model.named_parameters())
    packed = getattr(model, "packed_modules_mapping", {}) or {}
    unpacked_to_packed = {part: whole for whole, parts in packed.items() for part in parts}
    tied = bool(getattr(getattr(model, "config", None), "tie_word_embeddings", False))
    for name, tensor in tensors.items():
        if name in parameters:
            # Only 1-D parameters (norms, biases) keep their checkpoint shape in every engine layout:
            # vLLM pads vocabularies and its CPU kernels repack matrices (the named parameter is then
            # empty). Matrix shapes are checked by vLLM's own loader during commit.
            if parameters[name].dim() == 1 == tensor.dim() and parameters[name].shape != tensor.shape:
                raise WeightSyncError(
                    f"weights v{version}: {name} has shape {tuple(tensor.shape)}, "
                    f"the engine's parameter {tuple(parameters[name].shape)}"
                )
            continue
        if tied and name == "lm_head.weight":
            continue  # the engine shares the embedding; the tensor is published for transformers
        packed_name = next(
            (
                name.replace(f".{part}.", f".{whole}.")
                for part, whole in unpacked_to_packed.items()
                if f".{part}." in name
            ),
            None,
        )
        if packed_name not in parameters:
            raise WeightSyncError(f"weights v{version}: {name} matches no parameter of the engine's model")


def _compare_loaded(
    model: torch.nn.Module, tensors: dict[str, torch.Tensor], version: int, require_match: bool = True
) -> int:
    """Compare every engine parameter stored under a published name with the published tensor.
    `require_match`: at least one must be comparable (a full load always has norms and embeddings;
    an adapter load may touch only fused or repacked layers, covered by the checksums instead)."""
    parameters = dict(model.named_parameters())
    checked = 0
    for name, published in tensors.items():
        loaded = parameters.get(name)
        if loaded is None or loaded.shape != published.shape:
            continue  # fused or renamed in the engine (qkv_proj, gate_up_proj); covered by the checksum
        if not torch.equal(loaded.detach().cpu(), published.to(loaded.dtype)):
            raise WeightSyncError(
                f"engine parameter {name} differs from published weights v{version} after load"
            )
        checked += 1
    if checked == 0 and require_match:
        raise WeightSyncError(
            f"weights v{version}: no published tensor could be matched to an engine parameter"
        )
    return checked


# vLLM imports this module in each worker (engine arg `worker_extension_cls`) before it loads the
# model, which is when the CPU kernels drop their weights unless told to keep them.
keep_cpu_linear_weights()
