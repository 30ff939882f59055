"""The `tandem` command line: one sub-command module per concern, registered from a literal list.

Each module exposes `register(subparsers)`, which adds its commands and sets `handler` on them.
Heavy libraries (torch, vLLM, Ray, DeepSpeed) are imported inside the handlers, after the
arguments and the config have been parsed, so `tandem config validate` answers in a second.
"""

import argparse
import importlib
import sys
from collections.abc import Sequence

from core.config import ConfigError

COMMAND_MODULES = (
    "services.cli.config_cmd",
    "services.cli.model_cmd",
    "services.cli.buffer_cmd",
    "services.cli.prompts_cmd",
    "services.cli.reward_cmd",
    "services.cli.train_cmd",
    "services.cli.data_cmd",
    "services.cli.bench_cmd",
    "services.cli.learner_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tandem",
        description="Tandem: distributed actor-learner RLHF (vLLM actors, reward server, buffer, DeepSpeed).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as error:
        print(f"tandem: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
