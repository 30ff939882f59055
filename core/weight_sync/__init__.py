"""Learner-to-actor weight transport: publish a versioned state dict, fetch the latest, verify it.

Both transports carry the same payload, a safetensors blob plus a `WeightManifest` of per-tensor
checksums, so what an actor loads can be checked against what the learner published, and no
transport ever unpickles tensors.
"""

from pathlib import Path

from core.config.run import RunConfig
from core.config.weight_sync import WeightSyncConfig
from core.weight_sync.manifest import (
    PublishedWeights,
    WeightManifest,
    WeightSyncError,
    decode_weights,
    encode_weights,
)
from core.weight_sync.protocol import WeightPublisher, WeightSubscriber


def weights_directory(config: WeightSyncConfig, run: RunConfig) -> Path:
    return config.directory if config.directory is not None else run.run_dir / "weights"


def open_publisher(config: WeightSyncConfig, run: RunConfig) -> WeightPublisher:
    """The learner's side of the configured transport (`ray` needs Ray initialised)."""
    if config.transport == "ray":
        from core.weight_sync.ray_transport import RayPublisher

        return RayPublisher(run.name)
    from core.weight_sync.filesystem import FilesystemPublisher

    return FilesystemPublisher(weights_directory(config, run), config.keep_versions)


def open_subscriber(config: WeightSyncConfig, run: RunConfig) -> WeightSubscriber:
    """The actors' side of the configured transport."""
    if config.transport == "ray":
        from core.weight_sync.ray_transport import RaySubscriber

        return RaySubscriber(run.name)
    from core.weight_sync.filesystem import FilesystemSubscriber

    return FilesystemSubscriber(weights_directory(config, run))


__all__ = [
    "PublishedWeights",
    "WeightManifest",
    "WeightPublisher",
    "WeightSubscriber",
    "WeightSyncError",
    "decode_weights",
    "encode_weights",
    "open_publisher",
    "open_subscriber",
    "weights_directory",
]
