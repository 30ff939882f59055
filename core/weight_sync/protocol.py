"""The two sides of weight transport. Implementations: `collective` (torch.distributed), `ray` (object
store) and `filesystem` (safetensors)."""

from typing import Protocol

import torch

from core.weight_sync.collective_receiver import CollectiveOffer
from core.weight_sync.manifest import PublishedWeights, WeightManifest


class WeightPublisher(Protocol):
    """The learner's side: make `state_dict` available to every actor as policy `version`."""

    def publish(self, state_dict: dict[str, torch.Tensor], version: int) -> WeightManifest: ...

    def close(self) -> None:
        """Stop serving (threads joined, connections dropped); what was published stays readable where
        the transport keeps it (files, the Ray store)."""


class WeightSubscriber(Protocol):
    """The actors' side: the newest published version, or None before the first publish. `latest` is
    what the engine's `load_weights` takes: the payload itself, or (`collective`) an offer of it."""

    def latest_version(self) -> int | None: ...

    def latest(self) -> PublishedWeights | CollectiveOffer | None: ...
