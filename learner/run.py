"""The learner's main loop: sample a mixed batch -> share it with the ranks -> log-probs -> loss -> step
-> publish -> metrics -> ledger -> checkpoint -> ack. Everything it talks to comes in through narrow
seams (buffer, publisher, sink).

Acks wait for checkpoints: the fresh groups a step trained on are acknowledged to the buffer only
once a checkpoint that holds that step's weights is durable. Acked groups are gone from the buffer's
pending list; if the weights that learned from them died with the process, so would the groups. Held
unacked, they are handed out again after a crash (`recover`) and trained once into the weights that
survive. The checkpoint lists them (`LearnerState.deliveries`) and a resumed learner acks them again,
so a crash between the checkpoint and its ack does not train them twice. `RUN/ledger.jsonl` records
what each step trained and what each checkpoint acked (learner/ledger.py audits it).

With several data-parallel ranks every rank runs this same loop; rank 0 (the leader) alone samples,
acks, publishes and reports, and its batch reaches the others through `share_groups` (a stop request
travels the same way), so the ranks never disagree about what to do next.
"""

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from core.affinity import apply_cpu_affinity
from core.buffer import ExperienceBuffer, SampledBatch
from core.config import TandemConfig
from core.reference_model import ReferenceModel, reference_identity
from core.schemas import ScoredGroup, build_train_batch
from core.weight_sync import WeightPublisher
from learner import engine as ds
from learner.checkpoint import LearnerState, load_checkpoint, save_checkpoint
from learner.data_parallel import Ranks, broadcast_int, order_for_ranks, share_groups
from learner.ledger import LEDGER, Ledger
from learner.lora import AdapterOff, adapter_state_dict, apply_lora, is_lora
from learner.step import needs_behaviour_logprobs, row_sources, screen_groups, train_step

log = logging.getLogger(__name__)
MetricsSink = Callable[[dict[str, Any]], None]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Learner:
    """One learner rank. `buffer` and `publisher` are the leader's (rank 0); other ranks pass None."""

    def __init__(
        self,
        config: TandemConfig,
        buffer: ExperienceBuffer | None,
        publisher: WeightPublisher | None,
        sink: MetricsSink = lambda metrics: None,
        resume: bool = False,
    ):
        apply_cpu_affinity(config.learner.cpu_affinity, "learner.cpu_affinity")  # before DeepSpeed starts
        self.config = config
        self.sink = sink
        dtype = DTYPES[config.model.dtype]
        policy = AutoModelForCausalLM.from_pretrained(config.model.path, dtype=dtype)
        self.pad_token_id = int(policy.config.pad_token_id if policy.config.pad_token_id is not None else 0)
        if config.model.lora is not None:  # only the adapter trains (learner/lora.py)
            policy = apply_lora(policy, config.model.lora)
        self.engine = ds.create_engine(policy, config.learner)
        self.ranks = Ranks.current()
        if self.ranks.leader and (buffer is None or publisher is None):
            raise ValueError("learner rank 0 needs the experience buffer and the weight publisher")
        self.buffer, self.publisher = buffer, publisher
        self.published_bytes = 0  # of the last publish (the leader's; an adapter's alone in a LoRA run)
        if config.model.lora is not None:  # the base model under the adapter: no second copy
            self.reference = ReferenceModel.of_module(
                AdapterOff(self.engine.module), device=self.engine.device,
                identity=reference_identity(config.model.path, dtype),
            )  # fmt: skip
        else:
            self.reference = ReferenceModel(
                config.model.ref_path or config.model.path, dtype=dtype, device=self.engine.device
            )
        self.state = LearnerState()
        self.checkpointed_step = 0
        self.ledger = Ledger(config.run.run_dir / LEDGER if self.ranks.leader else None)
        # Deliveries trained since the last checkpoint: acked when the next one is on disk.
        self.unacked: list[str] = []
        # Groups `recover` queued again: Redis keeps them pending, so the backlog does not show them.
        self.recovered_left = 0
        self.skipped: Counter[str] = Counter()
        # RLOO without importance weights is on-policy only: it never trains on replayed groups.
        self.on_policy_only = (
            config.algorithm.name == "rloo" and config.algorithm.importance_sampling == "none"
        )
        restored = load_checkpoint(self.engine, config.run.run_dir) if resume else None
        reacked = 0
        if restored is not None:
            path, self.state = restored
            self.checkpointed_step = self.state.step
            if self.buffer is not None:
                # The checkpoint holds these groups' training; if the crash came before their ack,
                # ack them now, or `recover` would hand them out to be trained a second time.
                reacked = self.buffer.ack(self.state.deliveries)
            self.report(
                event="resumed", checkpoint=str(path), step=self.state.step,
                policy_version=self.state.policy_version, optimizer_steps=ds.optimizer_steps(self.engine),
                reacked=reacked,
            )  # fmt: skip
        else:
            self.ledger.write("start", step=0)
        if self.buffer is not None:
            # Deliveries a previous learner took and no checkpoint covers come back first.
            self.recovered_left = self.buffer.recover()
            if restored is not None:
                self.ledger.write(
                    "resume", step=self.state.step, checkpoint=restored[0].name, reacked=reacked,
                    redelivered=self.recovered_left,
                )  # fmt: skip
        self.announce_weights()  # before any actor generates: they start from what the learner has

    def run(
        self, should_stop: Callable[[], bool] = lambda: False, checkpoint_at_end: bool = True
    ) -> LearnerState:
        """Train until `learner.max_steps` or until `should_stop` (asked on the leader) says so; then
        checkpoint the last step unless it is already (`checkpoint_at_end=False` is for callers that
        run a step at a time and checkpoint when they are done)."""
        while self.state.step < self.config.learner.max_steps:
            started = time.perf_counter()
            sampled = self.sample_batch(should_stop) if self.ranks.leader else None
            waited = time.perf_counter() - started
            groups = share_groups(None if sampled is None else sampled.groups, self.ranks, self.engine.device)
            if groups is None:
                break  # the leader was asked to stop
            metrics = self.train(groups)
            self.state.step += 1
            if sampled is not None:
                self.unacked += sampled.delivery_ids  # acked once a checkpoint holds this step
                self.ledger.write(
                    "step", step=self.state.step, policy_version=self.state.policy_version,
                    deliveries=sampled.delivery_ids,
                    fresh_groups=[group.group_id for group in sampled.groups[: sampled.num_fresh]],
                    replayed_groups=[group.group_id for group in sampled.groups[sampled.num_fresh :]],
                )  # fmt: skip
            metrics["publish_time_s"], metrics["publish_bytes"] = 0.0, 0
            if self.state.step % self.config.learner.sync_every == 0:
                metrics["publish_time_s"] = self.publish(self.state.policy_version + 1)
                metrics["publish_bytes"] = self.published_bytes
            if sampled is not None:
                self.report(
                    **metrics, **batch_metrics(sampled), skipped=dict(self.skipped), sample_wait_s=waited,
                    iteration_time_s=time.perf_counter() - started,
                )  # fmt: skip
            if self.state.step % self.config.learner.checkpoint_every == 0:
                self.checkpoint()
        if checkpoint_at_end and self.state.step > self.checkpointed_step:
            self.checkpoint()
        return self.state

    def sample_batch(self, should_stop: Callable[[], bool], poll_s: float = 0.01) -> SampledBatch | None:
        """The leader's next batch with at least one usable group; waits while the buffer has none,
        asking every `poll_s` (a tiny model's step takes tens of milliseconds: a coarser poll would
        be a large share of each step's wait)."""
        assert self.buffer is not None, "only the leader samples"
        while not should_stop():
            if not self.fresh_quota_met():
                time.sleep(poll_s)
                continue
            sampled = self.buffer.sample(
                self.config.learner.batch_groups, self.state.policy_version, self.on_policy_only
            )
            settled = len(sampled.delivery_ids) + sampled.stale_moved + sampled.stale_dropped
            self.recovered_left = max(0, self.recovered_left - settled)
            good, skipped = screen_groups(
                sampled.groups,
                self.config.learner.bad_data == "error",
                needs_behaviour_logprobs(self.config.algorithm),
                skip_uniform_rewards=self.config.buffer.skip_uniform_groups,
            )
            self.skipped.update(skipped)
            if good:
                return keep_groups(sampled, good)
            if sampled.delivery_ids:
                # All unusable: nothing trained, so settled now (not redelivered forever).
                self.buffer.ack(sampled.delivery_ids)
                self.ledger.write("unusable", step=self.state.step, deliveries=sampled.delivery_ids)
            time.sleep(poll_s)
        return None

    def fresh_quota_met(self) -> bool:
        """With `learner.wait_for_fresh`, whether the buffer holds the batch's on-policy share of
        fresh groups, so the learner does not outrun the actors by training on replay alone."""
        if not self.config.learner.wait_for_fresh or self.buffer is None:
            return True
        fraction = 1.0 if self.on_policy_only else self.config.buffer.on_policy_fraction
        quota = round(fraction * self.config.learner.batch_groups)
        return quota == 0 or self.buffer.stats().backlog + self.recovered_left >= quota

    def train(self, groups: list[ScoredGroup]) -> dict[str, Any]:
        """One optimizer step on the global batch `groups` (every rank calls it with the same groups)."""
        ordered, shard = order_for_ranks(groups, self.ranks)
        batch = build_train_batch(ordered, self.pad_token_id, reference_model=self.reference.identity)
        learner = self.config.learner
        lr = ds.warmup_lr(learner, self.state.step)
        hits, misses, provided = self.reference.hits, self.reference.misses, self.reference.provided
        metrics = train_step(
            self.engine, self.reference, batch, self.config.algorithm, learner.micro_batch_tokens, lr, shard,
            temperature=self.config.actors.temperature,
            sources=row_sources(ordered, self.state.policy_version),  # metrics by fresh/replayed/offline
        )  # fmt: skip
        stamped = self.reference.provided - provided
        looked_up = self.reference.hits - hits + self.reference.misses - misses + stamped
        metrics["reference_cache_hit_rate"] = (self.reference.hits - hits) / max(1, looked_up)
        # Rows whose reference log-prob came from the actors (`model.reference_on: actors`).
        metrics["reference_from_actors"] = stamped / max(1, looked_up)
        return metrics

    def announce_weights(self) -> None:
        """Publish what the actors must start from: a fresh run its initial weights as version 0; a
        resumed run its restored weights, since its publisher or buffer may be new (a restarted
        cluster) and actors must not start from the initial model. The version never reuses a number
        the buffer has announced (it holds the last one): versions published after the checkpoint
        named weights that died with the crash, and one number names one set of weights."""
        announced = self.buffer.learner_version() if self.buffer is not None else 0
        announced = broadcast_int(announced, self.ranks, self.engine.device)
        if self.state.step == 0 and self.state.policy_version == 0 and announced == 0:
            self.publish(0)
            return
        version = max(self.state.policy_version, announced + 1)
        self.report(
            event="republished", version=version, lost_versions=max(0, announced - self.state.policy_version)
        )
        self.publish(version)

    def publish(self, version: int) -> float:
        """Publish the weights as `version` (the leader sends; every rank enters, for ZeRO-3's gather);
        returns the seconds it took."""
        started = time.perf_counter()
        with ds.full_parameters(self.engine):
            if self.publisher is not None and self.buffer is not None:
                # Announce first: after a crash in between, the buffer's version is never behind what
                # actors may hold, which `announce_weights` relies on.
                self.buffer.set_learner_version(version)
                # A LoRA policy sends its adapter alone; the actors merge it into their base weights.
                module = self.engine.module
                manifest = self.publisher.publish(
                    adapter_state_dict(module) if is_lora(module) else module.state_dict(), version
                )
                self.published_bytes = manifest.num_bytes
        self.state.policy_version = version
        elapsed = time.perf_counter() - started
        log.info("published weights v%d in %.3f s", version, elapsed)
        return elapsed

    def checkpoint(self) -> Path:
        """Write a checkpoint of this step (every rank calls this), then ack the deliveries it covers."""
        self.state.deliveries = list(self.unacked)
        path = save_checkpoint(
            self.engine, self.state, self.config.run.run_dir, Path(self.config.model.path), self.ranks.leader,
            keep=self.config.learner.keep_checkpoints,
        )  # fmt: skip
        self.checkpointed_step = self.state.step
        if self.ranks.leader:
            log.info("checkpoint %s (policy version %d)", path, self.state.policy_version)
        if self.buffer is not None:
            self.ledger.sync()  # the steps' records outlive the ack that settles their groups
            newly = self.buffer.ack(self.unacked)
            self.ledger.write(
                "checkpoint", step=self.state.step, checkpoint=path.name, acked=self.unacked,
                newly_acked=newly,
            )  # fmt: skip
        self.unacked = []
        return path

    def report(self, **record: Any) -> None:
        """A metrics record from the leader, stamped with the step and policy version."""
        if self.ranks.leader:
            self.sink(record | {"step": self.state.step, "policy_version": self.state.policy_version})


def keep_groups(sampled: SampledBatch, good: list[ScoredGroup]) -> SampledBatch:
    """`sampled` restricted to the `good` groups, its counts and staleness list kept consistent."""
    kept = {id(group) for group in good}
    keep = [index for index, group in enumerate(sampled.groups) if id(group) in kept]
    return replace(
        sampled,
        groups=[sampled.groups[index] for index in keep],
        num_fresh=sum(index < sampled.num_fresh for index in keep),
        num_replayed=sum(index >= sampled.num_fresh for index in keep),
        staleness=[sampled.staleness[index] for index in keep] if sampled.staleness else [],
    )


def batch_metrics(sampled: SampledBatch) -> dict[str, Any]:
    """What the batch was made of: fresh vs replayed, and how far behind the learner its groups were."""
    return {
        "on_policy_fraction": sampled.on_policy_fraction,
        "num_fresh": sampled.num_fresh,
        "num_replayed": sampled.num_replayed,
        "staleness_histogram": dict(sorted(Counter(sampled.staleness).items())),
        "stale_moved": sampled.stale_moved,
        "stale_dropped": sampled.stale_dropped,
    }
