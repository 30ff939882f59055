"""`tandem ingest FILE.jsonl` (offline data into the buffer) and `tandem buffer stats`.

Both reach the run's buffer: Redis (`--buffer redis`, `--redis-url` or the config's `buffer.redis_url`)
or the Ray-served memory buffer of a running run (`--buffer memory`, joining the Ray cluster at
`--ray-address`, default the local one). Without `--buffer`, `--redis-url` means redis, else the
config's `buffer.kind` decides. Heavy imports (redis, ray, transformers, httpx) wait for the handler.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from core.config import load_config
from services.cli.common import add_config_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    ingest = subparsers.add_parser("ingest", help="load an offline JSONL of completions as off-policy groups")
    ingest.add_argument(
        "file", type=Path, help="JSONL: prompt, completions, rewards (or scored by --reward-url)"
    )
    _add_buffer_arguments(ingest)
    ingest.add_argument(
        "--tokenizer", type=Path, help="Hugging Face tokenizer directory for lines without token ids"
    )
    ingest.add_argument("--reward-url", help="reward server base URL, to score lines without rewards")
    ingest.set_defaults(handler=ingest_file)

    buffer = subparsers.add_parser("buffer", help="inspect the experience buffer")
    actions = buffer.add_subparsers(dest="buffer_action", required=True, metavar="ACTION")
    stats = actions.add_parser("stats", help="depth, backlog, replay size, staleness histogram, counters")
    _add_buffer_arguments(stats)
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.set_defaults(handler=show_stats)


def _add_buffer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--buffer", choices=("memory", "redis"), help="overrides buffer.kind")
    parser.add_argument("--redis-url", help="overrides buffer.redis_url (and implies --buffer redis)")
    parser.add_argument("--ray-address", help="Ray cluster of the memory buffer (default: auto)")
    add_config_arguments(parser, required=False)


def _open_buffer(args: argparse.Namespace) -> tuple[Any, str]:
    """The run's buffer and a line saying which one it is."""
    overrides = list(args.overrides)
    if args.redis_url:
        overrides.append(f"buffer.redis_url={args.redis_url}")
    config = load_config(args.config, overrides).buffer
    kind = args.buffer or ("redis" if args.redis_url else config.kind)
    if kind == "redis":
        from core.buffer.redis_buffer import RedisBuffer

        return RedisBuffer(config, consumer="tandem-cli"), f"redis {config.redis_url} {config.namespace}:*"
    from core.buffer.remote import RemoteBuffer, actor_name

    return RemoteBuffer.connect(config, args.ray_address), f"memory buffer actor {actor_name(config)!r}"


def ingest_file(args: argparse.Namespace) -> int:
    from core.buffer.ingest import (
        IngestError,
        build_offline_groups,
        hf_tokenizer,
        http_scorer,
        parse_offline_file,
    )

    try:
        lines = parse_offline_file(args.file)  # the whole file, before anything is opened or written
        buffer, where = _open_buffer(args)
        tokenize = hf_tokenizer(args.tokenizer) if args.tokenizer else None
        score = http_scorer(args.reward_url) if args.reward_url else None
        groups = build_offline_groups(lines, tokenize, score)
    except (IngestError, LookupError) as error:
        print(f"tandem ingest: {error}", file=sys.stderr)
        return 2
    written = buffer.put_offline(groups)  # one transaction (Redis) / one actor call (memory)
    buffer.close()
    print(f"{args.file}: {written} off-policy groups written to {where}")
    return 0


def show_stats(args: argparse.Namespace) -> int:
    try:
        buffer, where = _open_buffer(args)
    except LookupError as error:
        print(f"tandem buffer stats: {error}", file=sys.stderr)
        return 2
    stats = buffer.stats().as_dict()
    buffer.close()
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print(render_stats(stats, where))
    return 0


def render_stats(stats: dict[str, Any], where: str) -> str:
    rows = [f"Tandem buffer: {where}"]
    for key in ("depth", "backlog", "pending", "replay_size", "offline_size", "learner_version"):
        rows.append(f"  {key:<20} {stats[key]}")
    histogram = stats["staleness_histogram"]
    rows.append("  staleness (versions behind: fresh groups)")
    rows += [f"    {behind:>4}: {count}" for behind, count in histogram.items()] or ["    (no fresh groups)"]
    rows.append("  counters")
    rows += [f"    {name:<20} {value}" for name, value in stats["counters"].items()]
    return "\n".join(rows)
