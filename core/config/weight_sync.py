"""`weight_sync`: how the learner's weights reach the generation actors.

Three transports. `collective` (the default on one machine, through `auto`) streams bucketed tensors
over a torch.distributed pair group between the learner and each vLLM worker (gloo on CPU, NCCL on
CUDA) straight into vLLM's weight loading, each bucket checked by a fingerprint on arrival. The
`ray` object store and the `filesystem` (a shared directory) stay for clusters without a fabric the
learner and the actors can open connections on: they move a verified safetensors blob instead.
"""

from pathlib import Path
from typing import Literal

from pydantic import Field

from core.config.base import Section


class WeightSyncConfig(Section):
    transport: Literal["auto", "collective", "ray", "filesystem"] = "auto"
    """`auto`: `collective` when the run starts its own local Ray (`run.ray_address` unset: learner and
    actors share this machine), else `ray`. `collective`: a torch.distributed group from the learner to
    each vLLM worker (gloo on CPU, NCCL on CUDA), rendezvous through `<weights dir>/collective.json`;
    the learner's publish only snapshots the tensors, sender threads serve each actor when it asks.
    `ray`: the object store (CPU, multi-node, no direct connections needed). `filesystem`: safetensors
    in a shared directory. All three let a restarted or late actor catch up to the newest version."""

    directory: Path | None = None
    """Shared directory of the `filesystem` transport and of the `collective` rendezvous file; None
    means `<run_dir>/weights`."""

    keep_versions: int = 2
    """Published versions kept by the `filesystem` transport (older ones are deleted)."""

    collective_host: str = "127.0.0.1"
    """Address the learner's `collective` store and sender bind to and announce; set a routable one
    for actors on other machines (their workers must be able to connect to it)."""

    collective_bucket_mb: float = Field(64.0, gt=0)
    """`collective`: tensors travel packed in buckets of about this many MiB (fewer, larger messages;
    a larger tensor gets a bucket of its own)."""

    collective_timeout_s: float = Field(60.0, gt=0)
    """`collective`: longest wait for joining, for the learner's answer and for each bucket to be
    sent or received. A receiver that exceeds it is dropped and must join again; the learner's
    `publish` never waits for receivers."""
