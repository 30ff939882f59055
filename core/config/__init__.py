"""The one config tree of Tandem (see `TandemConfig`), its loader and its generated reference."""

from core.config.loader import ConfigError, load_config
from core.config.root import TandemConfig

__all__ = ["ConfigError", "TandemConfig", "load_config"]
