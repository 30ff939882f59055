"""`weight_sync`: how the learner's weights reach the generation actors."""

from pathlib import Path
from typing import Literal

from core.config.base import Section


class WeightSyncConfig(Section):
    transport: Literal["ray", "filesystem"] = "ray"
    """`ray`: the object store (CPU, multi-node). `filesystem`: safetensors in a shared directory, which
    also lets a restarted or late actor catch up."""

    directory: Path | None = None
    """Shared directory of the `filesystem` transport; None means `<run_dir>/weights`."""

    keep_versions: int = 2
    """Published versions kept by the `filesystem` transport (older ones are deleted)."""
