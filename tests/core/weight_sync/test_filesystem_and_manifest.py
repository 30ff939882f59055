"""Weight payloads: exact round-trip, every kind of corruption caught, versions visible only when whole."""

from pathlib import Path

import pytest
import torch

from core.weight_sync import WeightSyncError, decode_weights, encode_weights
from core.weight_sync.filesystem import FilesystemPublisher, FilesystemSubscriber, published_versions
from core.weight_sync.manifest import PublishedWeights, WeightManifest, load_verified_file


def state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "model.embed_tokens.weight": torch.randn(10, 4, generator=generator),
        "model.norm.weight": torch.ones(4),
        "model.layers.0.mlp.down_proj.weight": torch.randn(4, 8, generator=generator).to(torch.bfloat16),
    }


def test_round_trip_is_bit_exact_and_keeps_dtypes() -> None:
    original = state_dict()
    restored = decode_weights(encode_weights(original, version=3))
    assert set(restored) == set(original)
    for name, tensor in original.items():
        assert restored[name].dtype == tensor.dtype and torch.equal(restored[name], tensor)


def test_manifest_digest_depends_on_every_tensor() -> None:
    base = encode_weights(state_dict(), 1).manifest
    changed = state_dict()
    changed["model.norm.weight"][0] += 1e-6
    assert encode_weights(changed, 1).manifest.digest != base.digest
    assert encode_weights(state_dict(), 1).manifest.digest == base.digest
    assert WeightManifest.from_json(base.to_json()) == base


def test_a_flipped_byte_is_caught_and_named() -> None:
    published = encode_weights(state_dict(), version=5)
    blob = bytearray(published.blob)
    blob[-3] ^= 0xFF  # inside the last tensor's data
    with pytest.raises(WeightSyncError, match="v5: checksum mismatch"):
        decode_weights(PublishedWeights(published.manifest, bytes(blob)))


def test_truncated_blob_and_wrong_tensor_set_are_caught() -> None:
    published = encode_weights(state_dict(), version=2)
    with pytest.raises(WeightSyncError, match="blob has"):
        decode_weights(PublishedWeights(published.manifest, published.blob[:-10]))
    other = encode_weights({"x": torch.zeros(2)}, version=2)
    claimed = WeightManifest(2, published.manifest.checksums, num_bytes=len(other.blob))
    with pytest.raises(WeightSyncError, match="missing tensors"):
        decode_weights(PublishedWeights(claimed, other.blob))


def test_a_blob_file_is_verified_like_a_blob(tmp_path: Path) -> None:
    published = encode_weights(state_dict(), version=3)
    path = tmp_path / "blob.safetensors"
    path.write_bytes(published.blob)
    loaded = load_verified_file(published.manifest, path)
    assert loaded.keys() == state_dict().keys()
    assert all(torch.equal(loaded[name], tensor) for name, tensor in state_dict().items())
    corrupt = bytearray(published.blob)
    corrupt[-3] ^= 0xFF
    path.write_bytes(bytes(corrupt))
    with pytest.raises(WeightSyncError, match="v3: checksum mismatch"):
        load_verified_file(published.manifest, path)
    path.write_bytes(published.blob[:-10])
    with pytest.raises(WeightSyncError, match="manifest says"):
        load_verified_file(published.manifest, path)


def test_filesystem_transport_serves_the_newest_whole_version(tmp_path: Path) -> None:
    publisher = FilesystemPublisher(tmp_path, keep_versions=2)
    subscriber = FilesystemSubscriber(tmp_path)
    assert subscriber.latest() is None and subscriber.latest_version() is None
    for version in (1, 2, 3):
        publisher.publish(state_dict(seed=version), version)
    assert published_versions(tmp_path) == [2, 3]  # older versions pruned
    latest = subscriber.latest()
    assert latest is not None and latest.version == 3
    assert torch.equal(
        decode_weights(latest)["model.embed_tokens.weight"], state_dict(3)["model.embed_tokens.weight"]
    )
    # A blob without its manifest (a publish that died midway) is invisible.
    (tmp_path / "policy-v00000009.safetensors").write_bytes(b"partial")
    assert subscriber.latest_version() == 3


def test_filesystem_manifest_without_blob_is_an_error(tmp_path: Path) -> None:
    FilesystemPublisher(tmp_path).publish(state_dict(), 4)
    (tmp_path / "policy-v00000004.safetensors").unlink()
    with pytest.raises(WeightSyncError, match="v4: manifest present but blob missing"):
        FilesystemSubscriber(tmp_path).latest()


def test_tied_weights_are_published_under_both_names() -> None:
    shared = torch.randn(6, 4)
    tied = {"model.embed_tokens.weight": shared, "lm_head.weight": shared}
    restored = decode_weights(encode_weights(tied, version=1))
    assert torch.equal(restored["lm_head.weight"], shared)
    assert torch.equal(restored["model.embed_tokens.weight"], shared)
