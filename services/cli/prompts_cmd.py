"""`tandem prompts push FILE|-` (live prompts into a run's Redis stream) and `tandem prompts stats`.

Both reach the stream of `actors.prompt_redis_url` / `actors.prompt_stream` (default
`tandem:<run.name>:prompts`) of the config given by `--config`/`--set`. A push reads and validates
all its input first, with the rules of prompt files, so a bad line pushes nothing. It takes what
prompt files may be (JSONL, Parquet, a `datasets` folder; standard input is JSONL) with the config's
`actors.prompt_fields`, which `--field PROMPT_FIELD=COLUMN` overrides field by field; the stream gets
Tandem's own field names. Chat prompts (`messages`) are refused when the config's model has no chat
template (when its folder is at hand), since the actors could not render them. redis is imported
inside the handlers.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from core.prompts import PromptFileError, prompt_stream_key, read_prompt_file
from core.prompts.record import FieldMap, PromptRecord, check_field_map, read_prompt_lines
from core.redaction import redact_url
from core.tokenization import has_chat_template
from services.cli.common import add_config_arguments, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    prompts = subparsers.add_parser("prompts", help="feed or inspect the live prompt stream of a run")
    actions = prompts.add_subparsers(dest="prompts_action", required=True, metavar="ACTION")

    push = actions.add_parser(
        "push",
        help="append prompts (a prompt file: JSONL, Parquet or a datasets folder) to the run's stream",
    )
    push.add_argument("file", help="prompt file (JSONL, .parquet, datasets folder), or - for JSONL on stdin")
    push.add_argument(
        "--id-prefix",
        help="prompt_id of lines without one: <prefix>-<line>; default the file stem, or `stdin`",
    )
    push.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="read Tandem's FIELD (prompt, messages, reference, ...) from COLUMN; repeatable; "
        "overrides actors.prompt_fields",
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
        fields = check_field_map(config.actors.prompt_fields | parse_field_options(args.field))
        records = _read_input(args.file, args.id_prefix, fields)  # all of it, before Redis is touched
    except (PromptFileError, ValueError) as error:
        print(f"tandem prompts push: {error}; nothing pushed", file=sys.stderr)
        return 2
    chat = next((record for record in records if record.messages is not None), None)
    model = config.model.path
    # A feeder may run where the model is not: only a model folder at hand can be checked.
    if chat is not None and model.is_dir() and not has_chat_template(model):
        print(
            f"tandem prompts push: prompt {chat.prompt_id!r} has 'messages' but the tokenizer of "
            f"{model} (model.path) has no chat template to render them; nothing pushed",
            file=sys.stderr,
        )
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


def parse_field_options(options: list[str]) -> dict[str, str]:
    """`--field FIELD=COLUMN` options as a map; a ValueError names an option without `=`."""
    fields: dict[str, str] = {}
    for option in options:
        name, sep, column = option.partition("=")
        if not sep:
            raise ValueError(f"--field {option!r}: expected FIELD=COLUMN, e.g. prompt=question")
        fields[name.strip()] = column.strip()
    return fields


def _read_input(file: str, id_prefix: str | None, fields: FieldMap) -> list[PromptRecord]:
    if file == "-":
        return read_prompt_lines(sys.stdin, "<stdin>", id_prefix or "stdin", fields)
    return read_prompt_file(Path(file), id_prefix, fields)


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
