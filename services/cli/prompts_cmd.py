"""`tandem prompts push FILE|-` (live prompts into a run's Redis stream) and `tandem prompts stats`.

Both reach the stream of `actors.prompt_redis_url` / `actors.prompt_stream` (default
`tandem:<run.name>:prompts`) of the config given by `--config`/`--set`. A push reads and validates
all its input first, with the rules of prompt files, so a bad line pushes nothing. redis is imported
inside the handlers.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from core.prompts import PromptFileError, prompt_stream_key, read_prompt_file
from core.prompts.record import PromptRecord, read_prompt_lines
from core.redaction import redact_url
from services.cli.common import add_config_arguments, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    prompts = subparsers.add_parser("prompts", help="feed or inspect the live prompt stream of a run")
    actions = prompts.add_subparsers(dest="prompts_action", required=True, metavar="ACTION")

    push = actions.add_parser(
        "push",
        help="append JSONL prompts (one object per line, as in prompt files) to the run's stream",
    )
    push.add_argument("file", help="JSONL prompt file, or - for standard input")
    push.add_argument(
        "--id-prefix",
        help="prompt_id of lines without one: <prefix>-<line>; default the file stem, or `stdin`",
    )
    add_config_arguments(push, required=False)
    push.set_defaults(handler=push_prompts)

    stats = actions.add_parser("stats", help="stream length, waiting, pending and rejected entries")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_config_arguments(stats, required=False)
    stats.set_defaults(handler=show_stats)


def push_prompts(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    try:
        records = _read_input(args.file, args.id_prefix)  # all of it, before Redis is touched
    except PromptFileError as error:
        print(f"tandem prompts push: {error}; nothing pushed", file=sys.stderr)
        return 2
    if config.actors.prompt_source != "redis":
        print(
            "tandem prompts push: note: actors.prompt_source is 'file' in this config, so its actors "
            "read actors.train_prompts, not this stream",
            file=sys.stderr,
        )
    from core.prompts.redis_source import PromptStream

    stream = PromptStream(config.actors.prompt_redis_url, prompt_stream_key(config), retries=2)
    pushed = stream.push(records)
    stream.close()
    shown = redact_url(config.actors.prompt_redis_url)  # no password on the screen
    print(f"{args.file}: {pushed} prompts pushed to {shown} {stream.stream}")
    return 0


def _read_input(file: str, id_prefix: str | None) -> list[PromptRecord]:
    if file == "-":
        return read_prompt_lines(sys.stdin, "<stdin>", id_prefix or "stdin")
    return read_prompt_file(Path(file), id_prefix)


def show_stats(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    from core.prompts.redis_source import PromptStream

    stream = PromptStream(config.actors.prompt_redis_url, prompt_stream_key(config), retries=2)
    stats = stream.stats().as_dict()
    stream.close()
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print(render_stats(stats, redact_url(config.actors.prompt_redis_url)))
    return 0


def render_stats(stats: dict[str, Any], url: str) -> str:
    rows = [f"Tandem prompt stream: {url} {stats['stream']}"]
    for key in ("length", "waiting", "pending", "rejected", "consumers"):
        rows.append(f"  {key:<12} {stats[key]}")
    rows.append("  counters")
    rows += [f"    {name:<10} {value}" for name, value in stats["counters"].items()]
    return "\n".join(rows)
