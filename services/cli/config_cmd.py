"""`tandem config show|validate|reference`: print, check and document the config tree."""

import argparse

from core.config import load_config
from core.config.reference import render_reference, write_reference_into
from services.orchestration.run_files import resolved_yaml


def register(subparsers: argparse._SubParsersAction) -> None:
    config = subparsers.add_parser("config", help="show, validate or document the config tree")
    actions = config.add_subparsers(dest="config_action", required=True, metavar="ACTION")

    show = actions.add_parser("show", help="print the resolved config (defaults, file, env, --set)")
    show.add_argument("file", help="YAML config file")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    show.set_defaults(handler=show_config)

    validate = actions.add_parser("validate", help="check a config; exit 2 naming each bad key")
    validate.add_argument("file", help="YAML config file")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    validate.set_defaults(handler=validate_config)

    reference = actions.add_parser("reference", help="print the config reference (markdown)")
    reference.add_argument(
        "--write", metavar="MARKDOWN", help="replace the marked reference section in this file"
    )
    reference.set_defaults(handler=print_reference)


def show_config(args: argparse.Namespace) -> int:
    config = load_config(args.file, args.overrides)
    print(resolved_yaml(config), end="")  # secrets masked, as in every other dump of the config
    return 0


def validate_config(args: argparse.Namespace) -> int:
    load_config(args.file, args.overrides)
    print(f"{args.file}: valid")
    return 0


def print_reference(args: argparse.Namespace) -> int:
    if args.write:
        write_reference_into(args.write)
        print(f"{args.write}: config reference updated")
    else:
        print(render_reference(), end="")
    return 0
