"""Learner-to-actor weight transport: publish a versioned state dict, fetch the latest, verify it.

The `ray` and `filesystem` transports carry the same payload, a safetensors blob plus a
`WeightManifest` of per-tensor checksums, so what an actor loads can be checked against what the
learner published. The `collective` transport offers the actor a version (`CollectiveOffer`) whose
buckets its vLLM workers then receive over torch.distributed, each checked by a fingerprint. No
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


def resolve_transport(config: WeightSyncConfig, run: RunConfig) -> str:
    """The transport `auto` stands for: `collective` when the run starts its own local Ray (learner
    and actors on this machine), `ray` when it joins a cluster (actors may be on other machines)."""
    if config.transport != "auto":
        return config.transport
    return "collective" if run.ray_address is None else "ray"


def open_publisher(config: WeightSyncConfig, run: RunConfig) -> WeightPublisher:
    """The learner's side of the configured transport (`ray` needs Ray initialised)."""
    transport = resolve_transport(config, run)
    if transport == "collective":
        from core.weight_sync.collective_publisher import CollectivePublisher

        return CollectivePublisher(
            weights_directory(config, run), host=config.collective_host,
            bucket_bytes=int(config.collective_bucket_mb * (1 << 20)), timeout_s=config.collective_timeout_s,
        )  # fmt: skip
    if transport == "ray":
        from core.weight_sync.ray_transport import RayPublisher

        return RayPublisher(run.name)
    from core.weight_sync.filesystem import FilesystemPublisher

    return FilesystemPublisher(weights_directory(config, run), config.keep_versions)


def open_subscriber(config: WeightSyncConfig, run: RunConfig) -> WeightSubscriber:
    """The actors' side of the configured transport."""
    transport = resolve_transport(config, run)
    if transport == "collective":
        from core.weight_sync.collective_receiver import CollectiveSubscriber

        return CollectiveSubscriber(weights_directory(config, run), timeout_s=config.collective_timeout_s)
    if transport == "ray":
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
    "resolve_transport",
    "weights_directory",
]
