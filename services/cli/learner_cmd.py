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
import signal
import threading
from typing import Any

from services.cli.common import add_config_arguments, config_from_args, setup_logging
from services.orchestration.preflight import preflight_learn


def register(subparsers: argparse._SubParsersAction) -> None:
    learn = subparsers.add_parser("learn", help="run the learner alone against the configured buffer")
    add_config_arguments(learn)
    learn.add_argument("--resume", action="store_true", help="continue from run.run_dir's newest checkpoint")
    learn.add_argument("--ray-address", help="Ray cluster to join when one is needed (default: start one)")
    learn.set_defaults(handler=run_learner)


def run_learner(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    # The model folders, the buffer's Redis and the run directory, checked before torch or DeepSpeed
    # load: bad input is one line and exit code 2, not a traceback.
    preflight_learn(config, resume=args.resume)
    run_dir = config.run.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(config, run_dir / "learner.log")
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

    from core.weight_sync import resolve_transport

    learner: Any
    if (
        config.learner.num_ranks > 1
        or config.buffer.kind == "memory"
        or resolve_transport(config.weight_sync, config.run) == "ray"  # `auto` may mean `ray`
    ):
        from learner.ranks import LearnerRanks, join_ray

        join_ray(args.ray_address)
        claim_namespace(config, args.resume)
        learner = LearnerRanks(config, sink, resume=args.resume)
        publisher = None  # rank 0 opens its own, in its Ray actor
    else:
        from core.buffer import open_buffer
        from core.weight_sync import open_publisher
        from learner.run import Learner

        buffer = open_buffer(config.buffer, consumer="learner-0", seed=config.run.seed)
        buffer.claim_namespace(args.resume, owner=f"run {config.run.name} ({run_dir})")
        publisher = open_publisher(config.weight_sync, config.run)
        learner = Learner(config, buffer, publisher, sink, args.resume)
    try:
        state = learner.run(should_stop=stop.is_set)
    finally:
        if publisher is not None:
            publisher.close()
    recorder.close()
    print(f"learner stopped at step {state.step}, policy version {state.policy_version}", flush=True)
    return 0


def claim_namespace(config: Any, resume: bool) -> None:
    """Claim the buffer namespace for this run before rank 0's learner opens it (a fresh run refuses
    a namespace a previous run's learner used: it would train on that run's groups)."""
    from core.buffer import open_buffer

    buffer = open_buffer(config.buffer, consumer="learner-0", seed=config.run.seed, shared=True)
    try:
        buffer.claim_namespace(resume, owner=f"run {config.run.name} ({config.run.run_dir})")
    finally:
        buffer.close()
