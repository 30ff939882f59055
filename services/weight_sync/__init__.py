"""Learner-to-actor weight transport: publish a versioned state dict, fetch the latest, verify it.

Both transports carry the same payload, a safetensors blob plus a `WeightManifest` of per-tensor
checksums, so what an actor loads can be checked against what the learner published, and no
transport ever unpickles tensors.
"""

from services.weight_sync.manifest import (
    PublishedWeights,
    WeightManifest,
    WeightSyncError,
    decode_weights,
    encode_weights,
)
from services.weight_sync.protocol import WeightPublisher, WeightSubscriber

__all__ = [
    "PublishedWeights",
    "WeightManifest",
    "WeightPublisher",
    "WeightSubscriber",
    "WeightSyncError",
    "decode_weights",
    "encode_weights",
]
