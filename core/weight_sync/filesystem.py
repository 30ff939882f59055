"""`filesystem` transport: one safetensors file + manifest per version in a shared directory.

A version becomes visible only when its manifest is renamed into place after the blob is written,
so a reader never sees half a file; a restarted or late actor catches up by reading the newest one.
"""

import os
from pathlib import Path

import torch

from core.weight_sync.manifest import PublishedWeights, WeightManifest, WeightSyncError, encode_weights


def _blob_path(directory: Path, version: int) -> Path:
    return directory / f"policy-v{version:08d}.safetensors"


def _manifest_path(directory: Path, version: int) -> Path:
    return directory / f"policy-v{version:08d}.manifest.json"


def _atomic_write(path: Path, data: bytes) -> None:
    scratch = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with open(scratch, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(scratch, path)


class FilesystemPublisher:
    def __init__(self, directory: Path, keep_versions: int = 2):
        if keep_versions < 1:
            raise ValueError(f"keep_versions must be >= 1, got {keep_versions}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keep_versions = keep_versions

    def publish(self, state_dict: dict[str, torch.Tensor], version: int) -> WeightManifest:
        published = encode_weights(state_dict, version)
        _atomic_write(_blob_path(self.directory, version), published.blob)
        _atomic_write(_manifest_path(self.directory, version), published.manifest.to_json().encode())
        self._prune()
        return published.manifest

    def close(self) -> None:
        """Nothing to stop: the published versions stay for the actors to read."""

    def _prune(self) -> None:
        versions = published_versions(self.directory)
        for version in versions[: -self.keep_versions]:
            _manifest_path(self.directory, version).unlink(missing_ok=True)
            _blob_path(self.directory, version).unlink(missing_ok=True)


class FilesystemSubscriber:
    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def latest_version(self) -> int | None:
        versions = published_versions(self.directory)
        return versions[-1] if versions else None

    def latest(self) -> PublishedWeights | None:
        version = self.latest_version()
        if version is None:
            return None
        manifest = WeightManifest.from_json(_manifest_path(self.directory, version).read_text())
        if manifest.version != version:
            raise WeightSyncError(f"{_manifest_path(self.directory, version)} announces v{manifest.version}")
        try:
            blob = _blob_path(self.directory, version).read_bytes()
        except FileNotFoundError:
            raise WeightSyncError(
                f"weights v{version}: manifest present but blob missing in {self.directory}"
            ) from None
        return PublishedWeights(manifest, blob)


def published_versions(directory: Path) -> list[int]:
    """Versions whose manifest is in place (the manifest is written last)."""
    if not directory.is_dir():
        return []
    return sorted(
        int(path.name[len("policy-v") : -len(".manifest.json")])
        for path in directory.glob("policy-v*.manifest.json")
    )
