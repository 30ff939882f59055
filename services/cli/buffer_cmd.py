"""`tandem ingest FILE.jsonl` (offline data into the buffer) and `tandem buffer stats|reset`."""

import argparse
import json
from pathlib import Path
from typing import Any

from services.cli.common import add_config_arguments
from services.config import load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    ingest = subparsers.add_parser("ingest", help="load an offline JSONL of completions as off-policy groups")
    ingest.add_argument(
        "file", type=Path, help="JSONL: prompt, completions, rewards (or scored by --reward-url)"
    )
    ingest.add_argument("--buffer", choices=("redis",), default="redis", help="where to write (Redis)")
    ingest.add_argument("--redis-url", help="overrides buffer.redis_url")
    ingest.add_argument(
        "--tokenizer", type=Path, help="Hugging Face tokenizer directory for lines without token ids"
    )
    ingest.add_argument("--reward-url", help="reward server base URL, to score lines without rewards")
    add_config_arguments(ingest, required=False)
    ingest.set_defaults(handler=ingest_file)

    buffer = subparsers.add_parser("buffer", help="inspect the Redis buffer")
    actions = buffer.add_subparsers(dest="buffer_action", required=True, metavar="ACTION")
    stats = actions.add_parser("stats", help="depth, backlog, replay size, staleness histogram, counters")
    stats.add_argument("--redis-url", help="overrides buffer.redis_url")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_config_arguments(stats, required=False)
    stats.set_defaults(handler=show_stats)


def _redis_buffer(args: argparse.Namespace) -> Any:
    from services.buffer.redis_buffer import RedisBuffer

    overrides = ["buffer.kind=redis", *args.overrides]
    if args.redis_url:
        overrides.append(f"buffer.redis_url={args.redis_url}")
    config = load_config(args.config, overrides)
    return RedisBuffer(config.buffer, consumer="tandem-cli")


def ingest_file(args: argparse.Namespace) -> int:
    from services.buffer.ingest import build_offline_groups, parse_offline_file

    lines = parse_offline_file(args.file)
    tokenize = _tokenizer(args.tokenizer) if args.tokenizer else None
    score = _reward_client(args.reward_url) if args.reward_url else None
    groups = build_offline_groups(args.file, lines, tokenize, score)
    buffer = _redis_buffer(args)
    written = buffer.put_offline(groups)
    print(f"{args.file}: {written} off-policy groups written to {buffer.keys['offline']}")
    return 0


def _tokenizer(directory: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    return lambda text: list(tokenizer.encode(text, add_special_tokens=False))


def _reward_client(base_url: str):  # type: ignore[no-untyped-def]
    import httpx

    client = httpx.Client(base_url=base_url, timeout=60)

    def score(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        response = client.post("/v1/score", json={"items": items})
        response.raise_for_status()
        return response.json()["results"]

    return score


def show_stats(args: argparse.Namespace) -> int:
    stats = _redis_buffer(args).stats().as_dict()
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Tandem buffer", show_header=False)
    for key in ("backlog", "pending", "replay_size", "offline_size", "learner_version"):
        table.add_row(key, str(stats[key]))
    table.add_row(
        "staleness (versions: groups)",
        ", ".join(f"{k}: {v}" for k, v in stats["staleness_histogram"].items()) or "-",
    )  # type: ignore[union-attr]
    for name, value in stats["counters"].items():  # type: ignore[union-attr]
        table.add_row(f"counter {name}", str(value))
    Console().print(table)
    return 0
