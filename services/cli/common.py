"""Arguments shared by the commands that read the config tree."""

import argparse

from core.config import TandemConfig, load_config


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
