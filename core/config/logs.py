"""`logging`: console, progress display, TensorBoard and Prometheus exposure."""

from typing import Literal

from pydantic import Field

from core.config.base import Section


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level of the driver and the roles."""

    progress: bool = True
    """Show the live progress display (rich) when attached to a terminal."""

    tensorboard: bool = True
    """Write TensorBoard events into the run directory."""

    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Port of the driver's Prometheus endpoint; None: not exposed."""
