"""`tandem bench [NAME...] [--out docs/benchmarks.md] [--quick]`: the benchmark suite and its report.

The benchmarks live in the checkout's `benchmarks/` folder (they are not part of the installed
package), so this command runs from a source checkout. Each benchmark runs in its own process; see
benchmarks/suite.py for the protocol and benchmarks/report.py for what the report holds.
"""

import argparse
import sys
from pathlib import Path

BENCHMARKS_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser(
        "bench", help="run the benchmarks (ratios against same-run baselines) and write the report"
    )
    bench.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="benchmarks (default all): generation, learner, weight-sync, reward, sandbox, buffer, e2e",
    )
    bench.add_argument(
        "--out", type=Path, default=Path("docs/benchmarks.md"), help="markdown report (JSON goes beside it)"
    )
    bench.add_argument("--quick", action="store_true", help="small sizes and few repetitions (a smoke run)")
    bench.add_argument(
        "--log-dir", type=Path, default=Path("runs/bench"), help="one log per benchmark process"
    )
    bench.set_defaults(handler=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    if not (BENCHMARKS_DIR / "suite.py").is_file():
        print(f"tandem: no benchmark suite at {BENCHMARKS_DIR}: run from a source checkout", file=sys.stderr)
        return 2
    # The suite and its benchmarks import each other as top-level modules, as when run as scripts.
    sys.path.insert(0, str(BENCHMARKS_DIR))
    import suite

    outcomes = suite.run_suite(args.names, args.out, args.quick, args.log_dir)
    return 1 if any(outcome.result is None for outcome in outcomes) else 0
