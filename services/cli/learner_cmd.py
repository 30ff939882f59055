"""`tandem learn`: the learner on its own, against a buffer that outlives it (Redis, or a running run's
Ray-served memory buffer), publishing with the configured weight transport.

For a learner in its own process or container, next to actors fed by another driver, and for crash
tests: kill it at any point and start it again with `--resume`; it continues from its newest complete
checkpoint and the buffer hands back what it had taken and not acknowledged. Writes `metrics.jsonl`
and `events.jsonl` into `run.run_dir` (as `tandem train` does). SIGTERM or Ctrl-C stops it after the
current step with a final checkpoint. Ray is joined only when something needs it: several ranks, the
memory buffer or the `ray` weight transport.
"""

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from services.cli.common import add_config_arguments, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    learn = subparsers.add_parser("learn", help="run the learner alone against the configured buffer")
    add_config_arguments(learn)
    learn.add_argument("--resume", action="store_true", help="continue from run.run_dir's newest checkpoint")
    learn.add_argument("--ray-address", help="Ray cluster to join when one is needed (default: start one)")
    learn.set_defaults(handler=run_learner)


def run_learner(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    run_dir = config.run.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=config.logging.level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(sys.stderr), logging.FileHandler(run_dir / "learner.log")],
    )
    from services.orchestration.run_files import RunRecorder, resolved_yaml

    print("resolved config:\n" + resolved_yaml(config), flush=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    recorder = RunRecorder(run_dir, config.logging.tensorboard)

    def sink(record: dict[str, Any]) -> None:
        if "event" in record:
            recorder.record_event(record)
        else:
            recorder.record_step(record)

    learner: Any
    if (
        config.learner.num_ranks > 1
        or config.buffer.kind == "memory"
        or config.weight_sync.transport == "ray"
    ):
        from learner.ranks import LearnerRanks, join_ray

        join_ray(args.ray_address)
        learner = LearnerRanks(config, sink, resume=args.resume)
    else:
        from core.buffer import open_buffer
        from core.weight_sync import open_publisher
        from learner.run import Learner

        buffer = open_buffer(config.buffer, consumer="learner-0", seed=config.run.seed)
        learner = Learner(config, buffer, open_publisher(config.weight_sync, config.run), sink, args.resume)
    state = learner.run(should_stop=stop.is_set)
    recorder.close()
    print(f"learner stopped at step {state.step}, policy version {state.policy_version}", flush=True)
    return 0
