"""The learner's main loop: sample a mixed batch -> log-probs -> loss -> step -> ack -> publish ->
metrics -> checkpoint. Everything it talks to comes in through narrow seams (buffer, publisher, sink).
"""

import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from learner import engine as ds
from learner.checkpoint import LearnerState, load_checkpoint, save_checkpoint
from learner.reference import ReferenceModel
from learner.step import screen_groups, train_step
from services.buffer import ExperienceBuffer, SampledBatch
from services.config import TandemConfig
from services.schemas import build_train_batch
from services.weight_sync import WeightPublisher

log = logging.getLogger(__name__)
MetricsSink = Callable[[dict[str, Any]], None]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Learner:
    def __init__(
        self,
        config: TandemConfig,
        buffer: ExperienceBuffer,
        publisher: WeightPublisher,
        sink: MetricsSink = lambda metrics: None,
        resume: bool = False,
    ):
        self.config = config
        self.buffer = buffer
        self.publisher = publisher
        self.sink = sink
        dtype = DTYPES[config.model.dtype]
        policy = AutoModelForCausalLM.from_pretrained(config.model.path, dtype=dtype)
        self.pad_token_id = int(policy.config.pad_token_id if policy.config.pad_token_id is not None else 0)
        self.engine = ds.create_engine(policy, config.learner)
        self.reference = ReferenceModel(
            config.model.ref_path or config.model.path, dtype=dtype, device=self.engine.device
        )
        self.state = (load_checkpoint(self.engine, config.run.run_dir) if resume else None) or LearnerState()
        self.skipped: Counter[str] = Counter()
        # RLOO without importance weights is on-policy only: it never trains on replayed groups.
        self.on_policy_only = (
            config.algorithm.name == "rloo" and config.algorithm.importance_sampling == "none"
        )
        self.buffer.recover()  # deliveries a previous learner took but never acked come back first

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> LearnerState:
        if self.state.step == 0 and self.state.policy_version == 0:
            self.publish()  # version 0 = the initial weights, so actors start from what the learner has
        while self.state.step < self.config.learner.max_steps and not should_stop():
            sampled = self.sample_batch(should_stop)
            if sampled is None:
                break
            metrics = self.train(sampled)
            self.buffer.ack(sampled.delivery_ids)
            self.state.step += 1
            if self.state.step % self.config.learner.sync_every == 0:
                self.publish()
            self.sink(metrics | {"step": self.state.step, "policy_version": self.state.policy_version})
            if self.state.step % self.config.learner.checkpoint_every == 0:
                self.checkpoint()
        return self.state

    def sample_batch(self, should_stop: Callable[[], bool], poll_s: float = 0.05) -> SampledBatch | None:
        """The next batch with at least one usable group; waits while the buffer has none."""
        while not should_stop():
            sampled = self.buffer.sample(
                self.config.learner.batch_groups, self.state.policy_version, self.on_policy_only
            )
            good, skipped = screen_groups(sampled.groups, self.config.learner.bad_data == "error")
            self.skipped.update(skipped)
            if good:
                return SampledBatch(
                    good, sampled.delivery_ids, sampled.num_fresh, sampled.num_replayed,
                    sampled.stale_moved, sampled.stale_dropped, sampled.staleness,
                )  # fmt: skip
            if sampled.delivery_ids:
                self.buffer.ack(sampled.delivery_ids)  # all unusable: settled, not redelivered forever
            time.sleep(poll_s)
        return None

    def train(self, sampled: SampledBatch) -> dict[str, Any]:
        batch = build_train_batch(sampled.groups, self.pad_token_id)
        learner = self.config.learner
        lr = ds.warmup_lr(learner, self.state.step)
        metrics = train_step(
            self.engine, self.reference, batch, self.config.algorithm, learner.micro_batch_tokens, lr
        )
        return metrics | {
            "on_policy_fraction": sampled.on_policy_fraction,
            "staleness_histogram": dict(Counter(sampled.staleness)),
            "stale_moved": sampled.stale_moved,
            "stale_dropped": sampled.stale_dropped,
            "skipped": dict(self.skipped),
        }

    def publish(self) -> None:
        started = time.perf_counter()
        version = self.state.policy_version + (0 if self.state.step == 0 else 1)
        self.publisher.publish(self.engine.module.state_dict(), version)
        self.state.policy_version = version
        self.buffer.set_learner_version(version)
        log.info("published weights v%d in %.3f s", version, time.perf_counter() - started)

    def checkpoint(self) -> Path:
        return save_checkpoint(self.engine, self.state, self.config.run.run_dir, Path(self.config.model.path))
