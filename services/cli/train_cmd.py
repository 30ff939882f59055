"""`tandem train` (the whole loop: reward server, buffer, learner, generator actors) and `tandem plot`."""

import argparse
import sys
from pathlib import Path

from services.cli.common import add_config_arguments, config_from_args, setup_logging
from services.orchestration.preflight import preflight_train


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="run RL training end to end (see configs/demo.yaml)")
    add_config_arguments(train)
    train.add_argument("--run-dir", type=Path, help="run directory (overrides run.run_dir)")
    train.add_argument(
        "--resume", action="store_true", help="continue from the run directory's last checkpoint"
    )
    train.add_argument(
        "--no-progress", action="store_true", help="plain log lines instead of the live display"
    )
    train.set_defaults(handler=run_train)

    plot = subparsers.add_parser(
        "plot", help="redraw RUN_DIR/reward_curve.png from its metrics and eval files"
    )
    plot.add_argument("run_dir", type=Path)
    plot.set_defaults(handler=run_plot)


def run_train(args: argparse.Namespace) -> int:
    if args.run_dir is not None:
        args.overrides = [*args.overrides, f"run.run_dir={args.run_dir}"]
    config = config_from_args(args)
    # Every file, model folder and server the run needs, checked before Ray, torch or vLLM start: bad
    # input is one line and exit code 2 in about a second, not a traceback from an actor a minute in.
    preflight_train(config, resume=args.resume)
    config.run.run_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(config, config.run.run_dir / "train.log")
    from services.orchestration.driver import train
    from services.orchestration.run_files import resolved_yaml

    print("resolved config:\n" + resolved_yaml(config), flush=True)

    result = train(config, resume=args.resume, progress=False if args.no_progress else None)
    print(
        f"run {result.run_dir}: {result.steps} steps, policy v{result.policy_version}, "
        f"stopped by {result.stopped_by}; last eval {result.last_eval.get('eval_reward_mean')}; "
        f"curve {result.run_dir / 'reward_curve.png'}",
        flush=True,
    )
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from services.orchestration.plot import plot_reward_curve

    try:
        print(plot_reward_curve(args.run_dir))
    except FileNotFoundError as error:
        print(f"tandem: {error}", file=sys.stderr)
        return 2
    return 0
