"""The one config tree of Tandem (see `TandemConfig`), its loader and its generated reference."""

from services.config.loader import ConfigError, load_config
from services.config.root import TandemConfig

__all__ = ["ConfigError", "TandemConfig", "load_config"]
