"""`tandem ingest FILE.jsonl` (offline data into the buffer), `tandem buffer stats` and `tandem buffer
clear NAMESPACE` (a finished or abandoned run's groups out of a Redis namespace, before a fresh run).

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

from core.config import TandemConfig, load_config
from core.redaction import redact_url
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
    ingest.add_argument(
        "--reward-url",
        help="reward server base URL, to score lines without rewards (sends reward.auth_token as a bearer)",
    )
    ingest.add_argument(
        "--model",
        type=Path,
        help="model directory whose config.json limits token ids and lengths (default: model.path, "
        "else --tokenizer when it holds a config.json)",
    )
    ingest.add_argument(
        "--dead-letter", type=Path, help="where poison lines go (default: FILE.dead_letter.jsonl beside FILE)"
    )
    ingest.set_defaults(handler=ingest_file)

    buffer = subparsers.add_parser("buffer", help="inspect the experience buffer")
    actions = buffer.add_subparsers(dest="buffer_action", required=True, metavar="ACTION")
    stats = actions.add_parser("stats", help="depth, backlog, replay size, staleness histogram, counters")
    _add_buffer_arguments(stats)
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.set_defaults(handler=show_stats)

    clear = actions.add_parser(
        "clear",
        help="delete a Redis namespace's run data (fresh, pending, replay, version, counters, run marker)",
    )
    clear.add_argument("namespace", help="the buffer.namespace to empty (named, so it is never a default)")
    clear.add_argument("--redis-url", help="overrides buffer.redis_url")
    clear.add_argument("--all", action="store_true", help="also delete the offline pool (`tandem ingest`)")
    add_config_arguments(clear, required=False)
    clear.set_defaults(handler=clear_namespace)


def _add_buffer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--buffer", choices=("memory", "redis"), help="overrides buffer.kind")
    parser.add_argument("--redis-url", help="overrides buffer.redis_url (and implies --buffer redis)")
    parser.add_argument("--ray-address", help="Ray cluster of the memory buffer (default: auto)")
    add_config_arguments(parser, required=False)


def _config(args: argparse.Namespace) -> TandemConfig:
    overrides = list(args.overrides)
    if args.redis_url:
        overrides.append(f"buffer.redis_url={args.redis_url}")
    return load_config(args.config, overrides)


def _open_buffer(args: argparse.Namespace, config: TandemConfig, writes: bool = True) -> tuple[Any, str]:
    """The run's buffer and a line saying which one it is. Only a buffer that `writes` groups checks
    `buffer.durability` (reading the stats of a server without AOF is fine)."""
    buffer_config = config.buffer
    kind = args.buffer or ("redis" if args.redis_url else buffer_config.kind)
    if kind == "redis":
        from core.buffer.redis_buffer import RedisBuffer

        buffer = RedisBuffer(buffer_config, consumer="tandem-cli", check_durability=writes)
        return buffer, f"redis {redact_url(buffer_config.redis_url)} {buffer_config.namespace}:*"
    from core.buffer.remote import RemoteBuffer, actor_name

    where = f"memory buffer actor {actor_name(buffer_config)!r}"
    return RemoteBuffer.connect(buffer_config, args.ray_address), where


def ingest_file(args: argparse.Namespace) -> int:
    from core.buffer.ingest import (
        IngestError,
        default_dead_letter,
        hf_tokenizer,
        http_scorer,
        parse_offline_file,
        prepare_offline_groups,
        write_dead_letters,
    )
    from core.buffer.protocol import DurabilityError

    try:
        lines = parse_offline_file(args.file)  # the whole file, before anything is opened or written
        config = _config(args)
        buffer, where = _open_buffer(args, config)
        tokenizer = hf_tokenizer(args.tokenizer) if args.tokenizer else None
        # The reward server of a run checks the token; reward.auth_token comes from the config or from
        # TANDEM_REWARD__AUTH_TOKEN (load_config reads the environment).
        score = http_scorer(args.reward_url, config.reward.auth_token) if args.reward_url else None
        batch = prepare_offline_groups(lines, tokenizer, score, _limits(args, config, tokenizer))
    except (IngestError, LookupError, DurabilityError) as error:
        print(f"tandem ingest: {error}", file=sys.stderr)
        return 2
    written = buffer.put_offline(batch.groups) if batch.groups else 0  # one transaction / one actor call
    buffer.close()
    print(f"{args.file}: {written} off-policy groups written to {where}")
    if batch.rejected:
        path = write_dead_letters(
            batch.rejected, args.dead_letter or default_dead_letter(batch.rejected[0].where)
        )
        for item in batch.rejected:
            print(f"tandem ingest: {item.where}: left out, {item.reason}", file=sys.stderr)
        print(f"tandem ingest: {len(batch.rejected)} poison line(s) written to {path}", file=sys.stderr)
    return 0


def _limits(args: argparse.Namespace, config: TandemConfig, tokenizer: Any) -> Any:
    """The model's token-id and length limits: --model, else model.path, else the tokenizer's directory
    (when it is a model directory); None, with a warning, when none of them has a config.json."""
    from core.buffer.screening import model_limits

    for directory in (args.model, config.model.path):
        if directory is not None and (Path(directory) / "config.json").is_file():
            return model_limits(Path(directory))
    if args.model is not None:
        from core.buffer.ingest import IngestError

        raise IngestError(f"--model {args.model}: no config.json there")
    if tokenizer is None or tokenizer.limits is None:
        print(
            f"tandem ingest: no model config.json at {config.model.path}: token ids and lengths are not "
            "checked against the model (pass --model)",
            file=sys.stderr,
        )
        return None
    return tokenizer.limits


def clear_namespace(args: argparse.Namespace) -> int:
    config = _config(args)
    buffer_config = config.buffer.model_copy(update={"kind": "redis", "namespace": args.namespace})
    from core.buffer.redis_buffer import RedisBuffer

    buffer = RedisBuffer(buffer_config, consumer="tandem-cli", check_durability=False)
    try:
        removed = buffer.clear(keep_offline=not args.all)
    finally:
        buffer.close()
    kept = "" if args.all else " (offline pool kept; --all removes it too)"
    print(f"redis {redact_url(buffer_config.redis_url)} {args.namespace}:*: {removed} key(s) removed{kept}")
    return 0


def show_stats(args: argparse.Namespace) -> int:
    try:
        buffer, where = _open_buffer(args, _config(args), writes=False)
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
