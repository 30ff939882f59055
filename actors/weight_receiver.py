"""Loading published weights into a running vLLM engine, verified where they land.

`WeightReceiverExtension` is mixed into vLLM's worker (engine arg `worker_extension_cls`) and is
called through `LLM.collective_rpc`, vLLM's supported control path into its workers. It receives the
manifest and the path of the safetensors blob (staged by actors/engine.py: a path crosses the
control path in microseconds, the blob took seconds), checks every tensor's checksum, reloads the
weights in place with the worker's `reload_weights`, then reads back every parameter that vLLM
keeps under its checkpoint name (norms, output projections, embeddings: everything but the fused
q/k/v and gate/up) and compares it with what was published. Any mismatch raises with both versions
named: a generator must never keep generating from old weights while reporting a new version.
"""

import hashlib
from pathlib import Path
from typing import Any

import torch

from core.weight_sync.manifest import WeightManifest, WeightSyncError, load_verified_file

EXTENSION_QUALNAME = "actors.weight_receiver.WeightReceiverExtension"


class WeightReceiverExtension:
    """Methods added to each vLLM worker. `self` is the worker (it has `model_runner`, `reload_weights`).

    Loading is two calls: `stage` verifies checksums and that every tensor fits a parameter, touching
    nothing; `commit` then reloads the staged tensors. A bad payload is thus refused before any
    weight changes; only a failure inside vLLM's own reload can leave the engine in between.
    """

    _tandem_staged: tuple[WeightManifest, dict[str, torch.Tensor]] | None = None

    def tandem_stage_weights(self, manifest_json: str, blob_path: str) -> dict[str, Any]:
        manifest = WeightManifest.from_json(manifest_json)
        tensors = load_verified_file(manifest, Path(blob_path))  # raises on any checksum mismatch
        _check_fits(self.model_runner.get_model(), tensors, manifest.version)  # type: ignore[attr-defined]
        self._tandem_staged = (manifest, tensors)
        return {"version": manifest.version, "digest": manifest.digest}

    def tandem_commit_weights(self, version: int) -> dict[str, Any]:
        if self._tandem_staged is None or self._tandem_staged[0].version != version:
            staged = None if self._tandem_staged is None else self._tandem_staged[0].version
            raise WeightSyncError(f"commit of weights v{version} but v{staged} is staged")
        manifest, tensors = self._tandem_staged
        self._tandem_staged = None
        model = self.model_runner.get_model()  # type: ignore[attr-defined]
        dtype = next(model.parameters()).dtype
        self.reload_weights(  # type: ignore[attr-defined]
            weights_iterator=((name, tensor.to(dtype)) for name, tensor in tensors.items()),
        )
        checked = _compare_loaded(model, tensors, manifest.version)
        return {"version": manifest.version, "digest": manifest.digest, "checked_tensors": checked}

    def tandem_parameter_digest(self) -> str:
        """A digest of the engine's current parameters (changes whenever a load changed anything)."""
        model = self.model_runner.get_model()  # type: ignore[attr-defined]
        digest = hashlib.blake2b(digest_size=16)
        for name, parameter in sorted(model.named_parameters()):
            digest.update(name.encode())
            digest.update(parameter.detach().float().cpu().numpy().tobytes())
        return digest.hexdigest()


def _check_fits(model: torch.nn.Module, tensors: dict[str, torch.Tensor], version: int) -> None:
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


def _compare_loaded(model: torch.nn.Module, tensors: dict[str, torch.Tensor], version: int) -> int:
    """Compare every engine parameter stored under a published name with the published tensor."""
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
    if checked == 0:
        raise WeightSyncError(
            f"weights v{version}: no published tensor could be matched to an engine parameter"
        )
    return checked
