"""`GeneratorPool`: N `Generator`s as Ray actors, with resources from config, restarted when one dies.

Ray restarts a dead actor process (`actors.max_restarts`) by running its constructor again, which
starts a fresh engine and loads the newest published weights before it answers. The pool notices
the failed `run` call of the dead incarnation and calls `run` again on the restarted one; the prompt
cursor the actor saved after its last pushed batch lets it continue its shard.
"""

import logging
import time

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

from actors.generator import Generator, actor_id
from core.config import TandemConfig

log = logging.getLogger(__name__)

NAMESPACE = "tandem"


class RemoteGenerator:
    """Builds the Generator inside the Ray worker from the config's JSON (no pickled objects of ours)."""

    def __init__(self, config_json: str, index: int) -> None:
        self.generator = Generator(TandemConfig.model_validate_json(config_json), index)

    def ready(self) -> dict[str, object]:
        return self.generator.ready() | {"node_id": ray.get_runtime_context().get_node_id()}

    def run(self, max_batches: int | None = None) -> dict[str, object]:
        return self.generator.run(max_batches)

    def stop(self) -> None:
        self.generator.stop()

    def evaluate(self, limit: int | None = None) -> dict[str, object]:
        return self.generator.evaluate(limit)

    def stats(self) -> dict[str, object]:
        return self.generator.stats()

    def close(self) -> None:
        self.generator.close()


class GeneratorPool:
    def __init__(self, config: TandemConfig) -> None:
        actors = config.actors
        remote_class = ray.remote(RemoteGenerator)
        config_json = config.model_dump_json()
        self.config = config
        self.names = [actor_id(config.run.name, index) for index in range(actors.num_actors)]
        self.handles = [
            remote_class.options(
                name=name,
                namespace=NAMESPACE,
                num_cpus=actors.num_cpus,
                num_gpus=actors.num_gpus,
                resources=dict(actors.resources) or None,
                max_restarts=actors.max_restarts,
                # Threads, so stop() and stats() are answered while run() loops.
                max_concurrency=4,
            ).remote(config_json, index)
            for index, name in enumerate(self.names)
        ]
        self.runs: dict[int, ray.ObjectRef] = {}
        self.probes: dict[int, ray.ObjectRef] = {}  # ready() calls to actors Ray is restarting
        self.dead: set[int] = set()
        self._max_batches: int | None = None
        self.restarts = [0] * len(self.handles)
        self.final_stats: dict[int, dict[str, object]] = {}

    def wait_ready(self, timeout_s: float = 600.0) -> list[dict[str, object]]:
        """Each actor's `ready()` answer, waiting through restarts (a restarting actor is unavailable)."""
        deadline = time.monotonic() + timeout_s
        answers: list[dict[str, object]] = []
        for handle in self.handles:
            while True:
                try:
                    answers.append(
                        ray.get(handle.ready.remote(), timeout=max(deadline - time.monotonic(), 0))
                    )
                    break
                except ActorUnavailableError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
        return answers

    def start(self, max_batches: int | None = None) -> None:
        self._max_batches = max_batches
        for index, handle in enumerate(self.handles):
            self.runs[index] = handle.run.remote(max_batches)

    def supervise(self, timeout_s: float = 0.0) -> list[str]:
        """Collect finished runs; notice dead actors, and once Ray has restarted one (its constructor
        caught up to the newest weights), run it again. Returns what happened, as messages."""
        events: list[str] = []
        refs = list(self.runs.values()) + list(self.probes.values())
        if not refs:
            return events
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        for index, ref in list(self.runs.items()):
            if ref in done:
                del self.runs[index]
                events.extend(self._run_ended(index, ref))
        for index, ref in list(self.probes.items()):
            if ref in done:
                del self.probes[index]
                events.extend(self._probe_answered(index, ref))
        return events

    def _run_ended(self, index: int, ref: ray.ObjectRef) -> list[str]:
        name = self.names[index]
        try:
            self.final_stats[index] = ray.get(ref)
            return [f"{name} finished"]
        except RayActorError as error:
            # Restarting or dead for good (restarts used up): the ready() probe tells which.
            return self._restarting(index, error)

    def _restarting(self, index: int, error: Exception) -> list[str]:
        self.restarts[index] += 1
        self.probes[index] = self.handles[index].ready.remote()
        log.warning("%s died (%s); waiting for Ray to restart it", self.names[index], type(error).__name__)
        return [f"{self.names[index]} died ({type(error).__name__}); restart {self.restarts[index]}"]

    def _probe_answered(self, index: int, ref: ray.ObjectRef) -> list[str]:
        name = self.names[index]
        try:
            ready = ray.get(ref)
        except ActorUnavailableError:
            time.sleep(0.2)  # still restarting: ask again on the next call
            self.probes[index] = self.handles[index].ready.remote()
            return []
        except RayActorError as error:
            self.dead.add(index)
            return [f"{name} did not come back: {error}"]
        self.runs[index] = self.handles[index].run.remote(self._max_batches)
        return [f"{name} is back on weights v{ready['policy_version']}; generating again"]

    def running(self) -> bool:
        """Whether any actor is generating or coming back to generate."""
        return bool(self.runs or self.probes)

    def evaluate(self, limit: int | None = None) -> ray.ObjectRef:
        """Start a held-out evaluation on actor 0 (between its batches); `ray.get` the ref for the result."""
        return self.handles[0].evaluate.remote(limit)

    def stats(self, timeout_s: float = 5.0) -> list[dict[str, object]]:
        """Each actor's stats; an actor that does not answer (restarting) is reported as such."""
        refs = [handle.stats.remote() for handle in self.handles]
        stats: list[dict[str, object]] = []
        for index, ref in enumerate(refs):
            try:
                entry = ray.get(ref, timeout=timeout_s)
            except (GetTimeoutError, RayActorError) as error:
                entry = {"actor_id": self.names[index], "state": f"unavailable ({type(error).__name__})"}
            entry["restarts"] = self.restarts[index]
            stats.append(entry)
        return stats

    def stop(self, timeout_s: float = 120.0) -> None:
        """Ask every actor to finish its batch in flight, then wait for the runs to return."""
        for handle in self.handles:
            handle.stop.remote()
        deadline = time.monotonic() + timeout_s
        while self.running() and time.monotonic() < deadline:
            self.supervise(timeout_s=1.0)
            # Again: an actor restarted meanwhile begins a new run(), which clears the stop flag.
            for handle in self.handles:
                handle.stop.remote()

    def kill(self, index: int) -> None:
        """Kill one actor's process the way a crash would (Ray restarts it); for tests and drills."""
        ray.kill(self.handles[index], no_restart=False)

    def shutdown(self, close_timeout_s: float = 30.0) -> None:
        """Close the actors that are not running (engine processes and threads end cleanly rather than
        die with the worker), then kill them all."""
        busy = set(self.runs) | set(self.probes) | self.dead
        closing = {handle.close.remote(): i for i, handle in enumerate(self.handles) if i not in busy}
        done: list[ray.ObjectRef] = []
        if closing:
            done, _ = ray.wait(list(closing), num_returns=len(closing), timeout=close_timeout_s)
        for ref in done:
            try:
                ray.get(ref)
            except Exception as error:  # the actor is killed next either way
                log.warning("%s did not close cleanly: %s", self.names[closing[ref]], error)
        for handle in self.handles:
            ray.kill(handle, no_restart=True)
