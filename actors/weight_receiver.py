"""Loading published weights into a running vLLM engine, verified where they land.

`WeightReceiverExtension` is mixed into vLLM's worker (engine arg `worker_extension_cls`) and is
called through `LLM.collective_rpc`, vLLM's supported control path into its workers. It receives the
safetensors blob and manifest, checks every tensor's checksum, reloads the weights in place with the
worker's `reload_weights`, then reads back every parameter that vLLM keeps under its checkpoint name
(norms, output projections, embeddings: everything but the fused q/k/v and gate/up) and compares it
with what was published. Any mismatch raises with both versions named: a generator must never keep
generating from old weights while reporting a new version.
"""

from typing import Any

import torch

from services.weight_sync.manifest import (
    PublishedWeights,
    WeightManifest,
    WeightSyncError,
    decode_weights,
)

EXTENSION_QUALNAME = "actors.weight_receiver.WeightReceiverExtension"


class WeightReceiverExtension:
    """Methods added to each vLLM worker. `self` is the worker (it has `model_runner`, `reload_weights`)."""

    def tandem_load_weights(self, manifest_json: str, blob: bytes) -> dict[str, Any]:
        manifest = WeightManifest.from_json(manifest_json)
        tensors = decode_weights(PublishedWeights(manifest, blob))  # raises on any checksum mismatch
        model = self.model_runner.get_model()  # type: ignore[attr-defined]
        dtype = next(model.parameters()).dtype
        self.reload_weights(  # type: ignore[attr-defined]
            weights_iterator=((name, tensor.to(dtype)) for name, tensor in tensors.items()),
        )
        checked = _compare_loaded(model, tensors, manifest.version)
        return {"version": manifest.version, "digest": manifest.digest, "checked_tensors": checked}

    def tandem_parameter_digest(self) -> str:
        """A digest of the engine's current parameters (changes whenever a load changed anything)."""
        import hashlib

        model = self.model_runner.get_model()  # type: ignore[attr-defined]
        digest = hashlib.blake2b(digest_size=16)
        for name, parameter in sorted(model.named_parameters()):
            digest.update(name.encode())
            digest.update(parameter.detach().float().cpu().numpy().tobytes())
        return digest.hexdigest()


def _compare_loaded(model: torch.nn.Module, tensors: dict[str, torch.Tensor], version: int) -> int:
    """Compare every engine parameter stored under a published name with the published tensor."""
    parameters = dict(model.named_parameters())
    checked = 0
    for name, published in tensors.items():
        loaded = parameters.get(name)
        if loaded is None or loaded.shape != published.shape:
            continue  # fused or renamed in the engine (qkv_proj, gate_up_proj); covered by the checksum
        if not torch.equal(loaded.detach().cpu(), published.to(loaded.dtype)):
            raise WeightSyncError(f"engine parameter {name} differs from published weights v{version} after load")
        checked += 1
    if checked == 0:
        raise WeightSyncError(f"weights v{version}: no published tensor could be matched to an engine parameter")
    return checked
