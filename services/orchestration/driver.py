"""`train(config)`: the whole loop of `tandem train`, in the driver process.

Start order matters: the reward server and the buffer first (actors need both), then the generator
pool and the learner side by side (the actors' engines start while the learner loads; the learner
announces its weights before any actor is told to generate, and every batch starts by loading them).
The learner runs in this process; its `should_stop` hook, called between steps and while it waits for
data, is where the driver supervises the actors, collects evaluations, enforces the time budget and
honours Ctrl-C. Shutdown always ends with a checkpoint, the reward curve and the actors stopped.
"""

import logging
import signal
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from core.affinity import resolve_auto_affinity, restored_cpu_layout
from core.buffer import open_buffer
from core.config import TandemConfig
from core.weight_sync import open_publisher
from services.orchestration.plot import plot_reward_curve
from services.orchestration.progress import Progress
from services.orchestration.run_files import RunRecorder, write_json, write_resolved_config
from services.orchestration.supervisor import Supervisor

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    policy_version: int
    stopped_by: str
    last_eval: dict[str, Any]


def train(config: TandemConfig, resume: bool = False, progress: bool | None = None) -> TrainResult:
    # Ray's start is mostly waiting for its daemons; the learner's imports (torch, transformers,
    # DeepSpeed: seconds of CPU) and the reward server's run meanwhile.
    importing = threading.Thread(target=import_roles, name="import-roles", daemon=True)
    importing.start()
    run_dir = config.run.run_dir
    checkpoints = run_dir / "checkpoints"
    if not resume and checkpoints.is_dir() and any(checkpoints.iterdir()):
        raise FileExistsError(
            f"{run_dir} already holds checkpoints: pass --resume to continue that run, or a new --run-dir"
        )
    config = with_cpu_layout(config)
    write_resolved_config(config, run_dir)
    start_ray(config)
    importing.join()
    from actors.pool import GeneratorPool
    from learner.run import Learner

    with ExitStack() as cleanup:
        cleanup.enter_context(restored_cpu_layout())  # the learner pins this process; unpinned last
        config = with_reward_url(config, cleanup)
        # The Ray-served buffer's work (every put and sample) runs beside the actors, not the learner.
        actor_cpus = config.actors.cpu_affinity if isinstance(config.actors.cpu_affinity, list) else None
        buffer = open_buffer(
            config.buffer, consumer="learner-0", seed=config.run.seed, shared=True, cpus=actor_cpus
        )
        buffer.claim_namespace(resume, owner=f"run {config.run.name} ({run_dir})")  # fresh: refuses old data
        load_offline_files(config, buffer)
        recorder = RunRecorder(run_dir, config.logging.tensorboard)
        cleanup.callback(recorder.close)
        supervisor = Supervisor(config, recorder, buffer)
        if config.logging.metrics_port is not None:
            from services.orchestration import prometheus

            prometheus.serve(config.logging.metrics_port)
            log.info("Prometheus metrics on :%d/metrics", config.logging.metrics_port)
        # The actors' engines start (tens of seconds) while the learner loads: side by side, not one
        # after the other. No actor generates before `pool.start`, and each batch begins by loading the
        # newest published weights, so none generates from anything but what the learner announces.
        # One learner rank publishes from this process; it stops serving after the actors have stopped
        # (registered first, closed last), so none is left mid-fetch. Several ranks: rank 0 opens the
        # same (named) buffer and the publisher itself, in a Ray actor.
        publisher = open_publisher(config.weight_sync, config.run) if config.learner.num_ranks == 1 else None
        if publisher is not None:
            cleanup.callback(publisher.close)
        pool = GeneratorPool(config)
        supervisor.pool = pool
        cleanup.callback(pool.shutdown)
        cleanup.callback(pool.stop, 60.0)
        if publisher is None:
            from learner.ranks import LearnerRanks

            learner = LearnerRanks(config, supervisor.on_step, resume=resume)
        else:
            learner = Learner(config, buffer, publisher, supervisor.on_step, resume=resume)
        supervisor.learner = learner
        log.info("waiting for %d generator actor(s) to start", config.actors.num_actors)
        for ready in pool.wait_ready():
            recorder.record_event({"event": "actor_ready"} | ready)
        if config.run.mode == "async":
            pool.start()
        supervisor.request_eval(learner.state.step)
        display = Progress(config, supervisor, enabled=progress)
        cleanup.enter_context(display)
        supervisor.display = display
        with InterruptHandler(supervisor):
            if config.run.mode == "async":
                learner.run(should_stop=supervisor.should_stop)
            else:
                run_sync(config, learner, pool, supervisor)
        supervisor.stopped_by = supervisor.stopped_by or (
            "max_steps" if learner.state.step >= config.learner.max_steps else "stopped"
        )
        log.info("run ends (%s) at step %d", supervisor.stopped_by, learner.state.step)
        supervisor.final_eval()
        write_json(run_dir / "actors.json", pool.stats())  # throughput, pauses, failures, restarts
        plot_reward_curve(run_dir)
        return TrainResult(
            run_dir,
            learner.state.step,
            learner.state.policy_version,
            supervisor.stopped_by,
            recorder.last_eval,
        )
    raise AssertionError("unreachable")  # pragma: no cover


def import_roles() -> None:
    """Import what `train` builds after Ray is up (Python's import lock makes a concurrent import from
    the main thread wait for this one, not import twice)."""
    import actors.pool  # noqa: F401
    import learner.run  # noqa: F401
    import reward_server.app  # noqa: F401


def run_sync(config: TandemConfig, learner: Any, pool: Any, supervisor: Supervisor) -> None:
    """Lock-step mode, for comparison: when the buffer lacks a step's worth of fresh groups, the actors
    generate and score at least that many on the current weights and stop; the learner trains one
    step and publishes; repeat. A round's leftovers feed the next step before anything new is made,
    so the backlog never reaches the high-water mark (where actors would pause inside a round)."""
    per_round = config.actors.prompts_per_batch * config.actors.num_actors
    batches = -(-config.learner.batch_groups // per_round)  # ceil: enough groups for one step
    while learner.state.step < config.learner.max_steps and not supervisor.should_stop():
        if supervisor.buffer.stats().backlog < config.learner.batch_groups:
            pool.start(max_batches=batches)
            while pool.running() and not supervisor.should_stop():
                pool.supervise(timeout_s=0.5)
            if pool.running():  # stopping mid-round: let the actors finish their batch in flight
                pool.stop()
                break
        target = learner.state.step + 1
        learner.run(
            should_stop=lambda goal=target: supervisor.should_stop() or learner.state.step >= goal,
            checkpoint_at_end=False,  # one step per call: checkpoint once, below
        )
    learner.checkpoint()


def load_offline_files(config: TandemConfig, buffer: Any) -> int:
    """Load `buffer.offline_files` into an empty offline pool (tokenised with the policy's tokenizer,
    unrewarded lines scored by the run's reward server); returns the groups added."""
    if not config.buffer.offline_files or buffer.stats().offline_size > 0:
        return 0
    from core.buffer.ingest import build_offline_groups, hf_tokenizer, http_scorer, parse_offline_file

    assert config.reward.url is not None
    tokenize = hf_tokenizer(config.model.path)
    score = http_scorer(config.reward.url, config.reward.auth_token)
    groups = []
    for path in config.buffer.offline_files:
        groups += build_offline_groups(parse_offline_file(path), tokenize, score)
    added = buffer.put_offline(groups)
    log.info("loaded %d offline groups from %d file(s)", added, len(config.buffer.offline_files))
    return added


def with_cpu_layout(config: TandemConfig) -> TandemConfig:
    """The config with `auto` CPU affinities made concrete (core/affinity.py): the machine's CPUs
    split between actors and learner in an async run that starts its own Ray, no pinning otherwise."""
    actors, learner = resolve_auto_affinity(
        config.actors.cpu_affinity,
        config.learner.cpu_affinity,
        pin=config.run.mode == "async" and config.run.ray_address is None,
    )
    if (actors, learner) != (config.actors.cpu_affinity, config.learner.cpu_affinity):
        log.info("CPU layout: actors on %s, learner on %s", actors or "any CPU", learner or "any CPU")
    return config.model_copy(
        update={
            "actors": config.actors.model_copy(update={"cpu_affinity": actors}),
            "learner": config.learner.model_copy(update={"cpu_affinity": learner}),
        }
    )


def start_ray(config: TandemConfig) -> None:
    if ray.is_initialized():
        return
    if config.run.ray_address is None:
        ray.init(include_dashboard=False, namespace="tandem", log_to_driver=True)
    else:
        ray.init(address=config.run.ray_address, namespace="tandem", log_to_driver=True)


def with_reward_url(config: TandemConfig, cleanup: ExitStack) -> TandemConfig:
    """The config with `reward.url` set: the configured server, or one embedded in this process."""
    if config.reward.url is not None:
        return config
    from reward_server.app import create_app
    from services.embedded_server import serve

    url = cleanup.enter_context(serve(create_app(config.reward), host="127.0.0.1"))
    log.info("embedded reward server at %s", url)
    reward = config.reward.model_copy(update={"url": url})
    return config.model_copy(update={"reward": reward})


class InterruptHandler:
    """Ctrl-C sets the stop flag (the run ends after the current step, with a checkpoint); a second
    Ctrl-C raises KeyboardInterrupt as usual."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.previous: Any = None

    def _handle(self, signum: int, frame: object) -> None:
        if self.supervisor.interrupted.is_set():
            raise KeyboardInterrupt
        log.warning("interrupted: finishing the current step, then checkpointing (Ctrl-C again to abort)")
        self.supervisor.interrupted.set()

    def __enter__(self) -> "InterruptHandler":
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
