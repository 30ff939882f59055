"""Arguments shared by the commands that read the config tree, and the log setup of the long-running ones."""

import argparse
import logging
import sys
from pathlib import Path

from core.config import TandemConfig, load_config
from core.redaction import RedactingFormatter, secret_values

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def add_config_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--config", "-c", required=required, help="YAML config file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one field, e.g. --set learner.lr=3e-4 (repeatable; value parsed as YAML)",
    )


def config_from_args(args: argparse.Namespace) -> TandemConfig:
    return load_config(args.config, args.overrides)


def setup_logging(config: TandemConfig, log_file: Path) -> None:
    """Log to stderr and `log_file`, every line passed through the one redaction: the config's secrets
    (tokens, header values, URL passwords) and any URL password are masked wherever a message, an
    argument or a traceback would print them."""
    formatter = RedactingFormatter(LOG_FORMAT, secret_values(config.model_dump(mode="json")))
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr), logging.FileHandler(log_file)]
    for handler in handlers:
        handler.setFormatter(formatter)
    logging.basicConfig(level=config.logging.level, handlers=handlers)
