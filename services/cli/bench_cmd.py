"""`tandem bench [NAME...] [--out docs/benchmarks.md] [--quick]`: the benchmark suite and its report.

The benchmarks live in the checkout's `benchmarks/` folder (they are not part of the installed
package), so this command runs from a source checkout. Each benchmark runs in its own process; see
benchmarks/suite.py for the protocol and benchmarks/report.py for what the report holds.

`tandem bench peer` is asked for by name only (it is not in the default "all"): it installs Hugging
Face TRL into a venv of its own under `--cache` and compares its RLOOTrainer with `tandem train`
(benchmarks/peer_bench.py), replacing only the peer section of the report.
"""

import argparse
import sys
from pathlib import Path

BENCHMARKS_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
PEER = "peer"  # TRL's RLOOTrainer vs tandem train: run by benchmarks/peer_bench.py, outside the suite


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser(
        "bench", help="run the benchmarks (ratios against same-run baselines) and write the report"
    )
    bench.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="benchmarks (default all): generation, learner, weight-sync, reward, sandbox, buffer, e2e, "
        "e2e-split; and peer (TRL's RLOOTrainer vs tandem train; only when named)",
    )
    bench.add_argument(
        "--out", type=Path, default=Path("docs/benchmarks.md"), help="markdown report (JSON goes beside it)"
    )
    bench.add_argument("--quick", action="store_true", help="small sizes and few repetitions (a smoke run)")
    bench.add_argument(
        "--log-dir", type=Path, default=Path("runs/bench"), help="one log per benchmark process"
    )
    bench.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache" / "tandem" / "bench",
        help="peer: where TRL's own virtualenv is kept (trl-venv/)",
    )
    bench.set_defaults(handler=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    if not (BENCHMARKS_DIR / "suite.py").is_file():
        print(f"tandem: no benchmark suite at {BENCHMARKS_DIR}: run from a source checkout", file=sys.stderr)
        return 2
    # The suite and its benchmarks import each other as top-level modules, as when run as scripts.
    sys.path.insert(0, str(BENCHMARKS_DIR))
    import suite

    names = [name for name in args.names if name != PEER]
    failed = False
    if names or not args.names:  # the suite's benchmarks: those named, or all of them
        outcomes = suite.run_suite(names, args.out, args.quick, args.log_dir)
        failed = any(outcome.result is None for outcome in outcomes)
    if PEER in args.names:
        import peer_bench

        # Runs after the suite, so the report it edits is the one the suite has just written.
        raw = peer_bench.run_peer(args.out, args.quick, args.log_dir, args.cache)
        print(f"[bench] peer: {peer_bench.describe(raw)}; wrote the peer section of {args.out}", flush=True)
    return 1 if failed else 0
