"""The driver's duties between learner steps: record metrics, evaluate on held-out prompts, keep the
eval-gated `best/` export, watch the actors, and decide when the run stops (time budget, Ctrl-C).

Evaluations run on actor 0 between its batches. Those at checkpoint steps are waited for (the
learner pauses for them), so they score exactly the checkpoint's weights and may promote it to
`best/`; the others overlap with training and are recorded with the version they actually scored.
"""

import logging
import threading
import time
from typing import Any

import ray

from core.config import TandemConfig
from services.orchestration import prometheus
from services.orchestration.best import BestExport
from services.orchestration.run_files import RunRecorder

log = logging.getLogger(__name__)


class Supervisor:
    """The driver's duties between learner steps: record metrics, evaluate, watch the actors, stop."""

    def __init__(self, config: TandemConfig, recorder: RunRecorder, buffer: Any = None) -> None:
        self.config = config
        self.buffer = buffer
        self.recorder = recorder
        self.learner: Any = None
        self.pool: Any = None
        self.display: Any = None
        self.stopped_by: str | None = None
        self.interrupted = threading.Event()
        self.started = time.monotonic()
        self._eval_ref: Any = None
        self._eval_step = 0
        self.actor_events: list[str] = []
        self.actor_stats: list[dict[str, Any]] = []
        self._last_stats = 0.0
        self.best = BestExport(recorder.run_dir)

    def on_step(self, metrics: dict[str, Any]) -> None:
        if "event" in metrics:  # "resumed", "republished": the run's story, not a step
            self.recorder.record_event(metrics)
            log.info("learner: %s", metrics)
            return
        row = self.recorder.record_step(metrics)
        prometheus.record_step(row)
        step = row["step"]
        if step % self.config.learner.checkpoint_every == 0:
            # The learner checkpoints right after this returns; it publishes nothing while we wait,
            # so this evaluation scores exactly the checkpoint's weights.
            self.request_eval(step)
            result = self._collect_eval(block=True)
            if result is not None:
                self.best.offer(step, int(result["policy_version"]), result["eval_reward_mean"])
        elif step % self.config.learner.eval_every == 0:
            self.request_eval(step)
        if self.display is not None:
            self.display.update()

    def should_stop(self) -> bool:
        self.poll()
        if self.interrupted.is_set():
            self.stopped_by = "interrupted"
        elif (
            self.config.run.max_minutes and time.monotonic() - self.started > 60 * self.config.run.max_minutes
        ):
            self.stopped_by = "max_minutes"
        return self.stopped_by is not None

    def poll(self) -> None:
        if self.pool is None:
            return
        for event in self.pool.supervise(timeout_s=0.0):
            log.warning("actors: %s", event)
            self.actor_events.append(event)
            self.recorder.record_event({"event": "actor", "message": event})
            if " died " in event:
                prometheus.record_restart()
        self._collect_eval(block=False)
        for message in self.best.settle():
            log.info("%s", message)
        if time.monotonic() - self._last_stats > 5.0:
            self.actor_stats = self.pool.stats(timeout_s=1.0)
            self._last_stats = time.monotonic()
            prometheus.record_actors(self.actor_stats)
            if self.buffer is not None:
                prometheus.record_buffer(self.buffer.stats().as_dict())
            if self.display is not None:
                self.display.update()

    def request_eval(self, step: int) -> None:
        if self.config.actors.eval_prompts is None or self.pool is None:
            return
        self._collect_eval(block=True)  # one evaluation at a time, in step order
        self._eval_ref, self._eval_step = self.pool.evaluate(), step

    def _collect_eval(self, block: bool) -> dict[str, Any] | None:
        """Record the evaluation in flight if it has finished (or wait for it); returns its result."""
        if self._eval_ref is None:
            return None
        ready, _ = ray.wait([self._eval_ref], timeout=None if block else 0)
        if not ready:
            return None
        ref, self._eval_ref = self._eval_ref, None
        try:
            result = ray.get(ref)
        except ray.exceptions.RayError as error:
            log.warning("evaluation at step %d failed: %s", self._eval_step, error)
            return None
        row = self.recorder.record_eval(self._eval_step, result)
        prometheus.record_eval(row)
        log.info("eval at step %d (v%s): %s", row["step"], row["policy_version"], row["eval_reward_mean"])
        return result

    def final_eval(self) -> None:
        """The last evaluation, on the final weights, unless one for this step is already recorded."""
        if self.config.actors.eval_prompts is None or self.pool is None:
            return
        self._collect_eval(block=True)
        step = self.learner.state.step
        if self.recorder.last_eval.get("step") != step:
            self.request_eval(step)
            result = self._collect_eval(block=True)
            if result is not None:  # the learner has stopped: these are the final checkpoint's weights
                self.best.offer(step, int(result["policy_version"]), result["eval_reward_mean"])
        for message in self.best.settle():
            log.info("%s", message)
