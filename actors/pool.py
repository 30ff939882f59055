"""`GeneratorPool`: N `Generator`s as Ray actors, with resources from config, restarted when one dies.

Ray restarts a dead actor process (`actors.max_restarts`) by running its constructor again, which
starts a fresh engine and loads the newest published weights before it answers. The pool notices
the failed `run` call of the dead incarnation and calls `run` again on the restarted one; the prompt
cursor the actor saved after its last pushed batch lets it continue its shard.
"""

import logging
import time

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayActorError

from actors.generator import Generator, actor_id
from services.config import TandemConfig

log = logging.getLogger(__name__)

NAMESPACE = "tandem"


class RemoteGenerator:
    """Builds the Generator inside the Ray worker from the config's JSON (no pickled objects of ours)."""

    def __init__(self, config_json: str, index: int) -> None:
        self.generator = Generator(TandemConfig.model_validate_json(config_json), index)

    def ready(self) -> dict[str, object]:
        return self.generator.ready()

    def run(self, max_batches: int | None = None) -> dict[str, object]:
        return self.generator.run(max_batches)

    def stop(self) -> None:
        self.generator.stop()

    def stats(self) -> dict[str, object]:
        return self.generator.stats()


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
                max_restarts=actors.max_restarts,
                # Threads, so stop() and stats() are answered while run() loops.
                max_concurrency=4,
            ).remote(config_json, index)
            for index, name in enumerate(self.names)
        ]
        self.runs: dict[int, ray.ObjectRef] = {}
        self.restarts = [0] * len(self.handles)
        self.final_stats: dict[int, dict[str, object]] = {}

    def wait_ready(self, timeout_s: float = 600.0) -> list[dict[str, object]]:
        return ray.get([handle.ready.remote() for handle in self.handles], timeout=timeout_s)

    def start(self, max_batches: int | None = None) -> None:
        self._max_batches = max_batches
        for index, handle in enumerate(self.handles):
            self.runs[index] = handle.run.remote(max_batches)

    def supervise(self, timeout_s: float = 0.0) -> list[str]:
        """Collect finished runs; re-run the ones whose actor died (Ray restarts it). Returns events."""
        events: list[str] = []
        if not self.runs:
            return events
        done, _ = ray.wait(list(self.runs.values()), num_returns=len(self.runs), timeout=timeout_s)
        for index, ref in list(self.runs.items()):
            if ref not in done:
                continue
            del self.runs[index]
            try:
                self.final_stats[index] = ray.get(ref)
                events.append(f"{self.names[index]} finished")
            except (ActorDiedError, ActorUnavailableError, RayActorError) as error:
                self.restarts[index] += 1
                events.append(
                    f"{self.names[index]} died ({type(error).__name__}); restart {self.restarts[index]}"
                )
                log.warning(
                    "%s died: %s; running it again once Ray has restarted it", self.names[index], error
                )
                self.runs[index] = self.handles[index].run.remote(self._max_batches)
        return events

    def running(self) -> bool:
        return bool(self.runs)

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
        while self.runs and time.monotonic() < deadline:
            self.supervise(timeout_s=1.0)
            # Again: an actor restarted meanwhile begins a new run(), which clears the stop flag.
            for handle in self.handles:
                handle.stop.remote()

    def kill(self, index: int) -> None:
        """Kill one actor's process the way a crash would (Ray restarts it); for tests and drills."""
        ray.kill(self.handles[index], no_restart=False)

    def shutdown(self) -> None:
        for handle in self.handles:
            ray.kill(handle, no_restart=True)
