"""`tandem make-offline`: offline completions of a tiny task, for `tandem ingest` or
`buffer.offline_files`."""

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    offline = subparsers.add_parser(
        "make-offline", help="write offline completions with rewards for a tiny task (off-policy data)"
    )
    offline.add_argument("--task", choices=["arithmetic", "code"], default="arithmetic")
    offline.add_argument(
        "--prompts", type=Path, required=True, help="prompts JSONL (e.g. MODEL/prompts/train.jsonl)"
    )
    offline.add_argument("--out", type=Path, required=True)
    offline.add_argument("--samples", type=int, default=4, help="completions per prompt")
    offline.add_argument("--correct-fraction", type=float, default=0.5)
    offline.add_argument("--limit", type=int, help="first N prompts only")
    offline.add_argument("--seed", type=int, default=0)
    offline.set_defaults(handler=make_offline)


def make_offline(args: argparse.Namespace) -> int:
    from core.tinymodels.offline import write_offline_data

    count = write_offline_data(
        args.task, args.prompts, args.out, args.samples, args.correct_fraction, args.limit, args.seed
    )
    print(f"{args.out}: {count} prompts x {args.samples} offline completions")
    return 0
