"""The published payload: safetensors bytes + a manifest of per-tensor checksums, and their checks.

A checksum is blake2b over (name, dtype, shape, raw bytes) of each tensor, so a truncated blob, a
tensor of the wrong dtype or a stale file under a new version number all fail verification loudly.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import load_file as load_safetensors_file
from safetensors.torch import save as save_safetensors


class WeightSyncError(RuntimeError):
    """Weights that cannot be trusted: missing, corrupt, or of another version than announced."""


@dataclass(frozen=True)
class WeightManifest:
    """What was published: the version and one checksum per tensor (and one over all of them)."""

    version: int
    checksums: dict[str, str]
    num_bytes: int

    @property
    def digest(self) -> str:
        """One checksum for the whole state dict (order-independent over names)."""
        joined = "".join(f"{name}:{self.checksums[name]};" for name in sorted(self.checksums))
        return hashlib.blake2b(joined.encode(), digest_size=16).hexdigest()

    def to_json(self) -> str:
        return json.dumps({"version": self.version, "checksums": self.checksums, "num_bytes": self.num_bytes})

    @classmethod
    def from_json(cls, text: str) -> "WeightManifest":
        data = json.loads(text)
        return cls(
            version=int(data["version"]), checksums=dict(data["checksums"]), num_bytes=int(data["num_bytes"])
        )


@dataclass(frozen=True)
class PublishedWeights:
    """A fetched version: the manifest and the safetensors blob it describes."""

    manifest: WeightManifest
    blob: bytes

    @property
    def version(self) -> int:
        return self.manifest.version


def tensor_checksum(name: str, tensor: torch.Tensor) -> str:
    tensor = tensor.detach().contiguous().cpu()
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    if tensor.numel():
        # Hash the tensor's own memory through the buffer protocol: `.tobytes()` copied every tensor
        # first, an extra pass over the whole model on both the publishing and the verifying side.
        digest.update(tensor.view(torch.uint8).numpy())
    return digest.hexdigest()


def encode_weights(state_dict: dict[str, torch.Tensor], version: int) -> PublishedWeights:
    """Serialise a state dict for publishing (tensors are copied to CPU and made contiguous)."""
    if version < 0:
        raise WeightSyncError(f"policy version must be >= 0, got {version}")
    tensors = _unaliased_cpu_tensors(state_dict)
    blob = save_safetensors(tensors, metadata={"tandem_policy_version": str(version)})
    checksums = {name: tensor_checksum(name, tensor) for name, tensor in tensors.items()}
    return PublishedWeights(WeightManifest(version, checksums, len(blob)), blob)


def _unaliased_cpu_tensors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors; a tensor sharing storage with an earlier one (tied embeddings) is copied,
    because safetensors stores each storage once and refuses aliases."""
    seen: set[int] = set()
    tensors = {}
    for name, tensor in state_dict.items():
        tensor = tensor.detach().contiguous().cpu()
        pointer = tensor.untyped_storage().data_ptr()
        tensors[name] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    return tensors


def decode_weights(published: PublishedWeights) -> dict[str, torch.Tensor]:
    """Deserialise and verify every tensor against the manifest; raise naming what disagrees."""
    manifest = published.manifest
    if len(published.blob) != manifest.num_bytes:
        raise WeightSyncError(
            f"weights v{manifest.version}: blob has {len(published.blob)} bytes, "
            f"manifest says {manifest.num_bytes}"
        )
    try:
        tensors = load_safetensors(published.blob)
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise WeightSyncError(f"weights v{manifest.version}: unreadable safetensors blob: {error}") from error
    verify_tensors(tensors, manifest)
    return tensors


def load_verified_file(manifest: WeightManifest, path: Path) -> dict[str, torch.Tensor]:
    """`decode_weights` for a blob that is a file: read by safetensors straight into tensors (one copy
    fewer than reading the bytes first), then verified the same way."""
    size = path.stat().st_size
    if size != manifest.num_bytes:
        raise WeightSyncError(
            f"weights v{manifest.version}: {path} has {size} bytes, manifest says {manifest.num_bytes}"
        )
    try:
        tensors = load_safetensors_file(path)
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise WeightSyncError(f"weights v{manifest.version}: unreadable safetensors file: {error}") from error
    verify_tensors(tensors, manifest)
    return tensors


def verify_tensors(tensors: dict[str, torch.Tensor], manifest: WeightManifest) -> None:
    missing = sorted(set(manifest.checksums) - set(tensors))
    extra = sorted(set(tensors) - set(manifest.checksums))
    if missing or extra:
        raise WeightSyncError(
            f"weights v{manifest.version}: missing tensors {missing[:5]}, unexpected {extra[:5]}"
        )
    bad = [
        name for name, tensor in tensors.items() if tensor_checksum(name, tensor) != manifest.checksums[name]
    ]
    if bad:
        raise WeightSyncError(
            f"weights v{manifest.version}: checksum mismatch for {len(bad)} tensors, e.g. {bad[:3]}"
        )
