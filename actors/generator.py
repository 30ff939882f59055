"""`Generator`: one generation actor's process, built from the config tree (the pool runs it under Ray).

It owns a vLLM engine, its shard of the prompts, a reward client on a background event loop, the
buffer and the weight subscriber, and the policy's tokenizer for chat prompts, which it renders with
the chat template before vLLM sees them (actors/rollout.py). On construction it catches up to the
newest published weights before anything is generated, so an actor that Ray restarted never produces
samples from the initial (or any outdated) weights it booted with.
"""

import logging
import threading
from concurrent.futures import Future

from actors.dead_letter import DeadLetterFile
from actors.event_loop import BackgroundLoop
from actors.reward_client import RewardClient, RewardItem, RewardOutcome
from actors.rollout import RolloutSettings, RolloutWorker, StepOutcome, render_prompt, reward_item
from actors.sampling import SamplingSettings
from core.affinity import apply_cpu_affinity
from core.buffer import open_buffer
from core.buffer.screening import model_limits
from core.config import TandemConfig
from core.config.actors import ActorsConfig
from core.gc_heap import freeze_startup_objects
from core.prompts import FilePromptSource, PromptRecord, open_prompt_source
from core.prompts.record import read_prompt_file
from core.reference_model import ReferenceModel
from core.tokenization import ChatRenderer, load_tokenizer
from core.weight_sync import open_subscriber

log = logging.getLogger(__name__)


class LoopScoring:
    """The rollout loop's `Scoring`: reward calls submitted to a client on a background loop."""

    def __init__(self, client: RewardClient, loop: BackgroundLoop) -> None:
        self.client = client
        self.loop = loop

    def submit(self, items: list[RewardItem]) -> "Future[list[RewardOutcome]]":
        return self.loop.submit(self.client.score(items))


def actor_id(run_name: str, index: int) -> str:
    return f"{run_name}-actor-{index}"


def actor_reference(config: TandemConfig) -> ReferenceModel | None:
    """The reference model this actor stamps its samples with (`model.reference_on: actors`), on the
    actor's GPU when it has one; None when the learner computes the reference log-probs. With LoRA
    the reference is the base model, `model.path` (the config refuses another `ref_path`)."""
    if config.model.reference_on != "actors":
        return None
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = config.model.ref_path or config.model.path
    return ReferenceModel(path, dtype=getattr(torch, config.model.dtype), device=device)


class Generator:
    def __init__(self, config: TandemConfig, index: int, shared_buffer: bool = True) -> None:
        apply_cpu_affinity(config.actors.cpu_affinity, "actors.cpu_affinity")  # before vLLM starts
        from actors.engine import GenerationEngine

        if config.reward.url is None:
            raise ValueError("reward.url is not set: the actors need a running reward server to score")
        self.config = config
        self.actor_id = actor_id(config.run.name, index)
        actors = config.actors
        # Prompts and their chat template first: a refusal should not wait for vLLM to start.
        prompts = open_prompt_source(config, shard_index=index, num_shards=actors.num_actors)
        eval_records = (
            read_prompt_file(actors.eval_prompts, fields=actors.prompt_fields) if actors.eval_prompts else []
        )
        # The tokenizer vLLM loads from the same folder, for chat prompts: rendered here once (with the
        # function offline ingest uses), so the engine, the samples and the learner share their ids.
        renderer = ChatRenderer(load_tokenizer(config.model.path), config.model.path)
        train_records = prompts.records if isinstance(prompts, FilePromptSource) else []
        if _has_chat(train_records) or _has_chat(eval_records):
            renderer.require_template()  # at start (naming the model), not at the first chat prompt
        # Held-out prompts never change: rendered once for the whole run (a refusal fails the start).
        eval_rendered = [render_prompt(record, renderer) for record in eval_records]
        self.engine = GenerationEngine(
            config.model.path,
            dtype=config.model.dtype,
            seed=config.run.seed + index,
            max_model_len=None,  # the model's own context length (vLLM reads it from config.json)
            tensor_parallel_size=actors.tensor_parallel_size,
            in_process=engine_in_process(actors),
        )
        reference = actor_reference(config)
        self.loop = BackgroundLoop()
        self.client = RewardClient(
            config.reward.url,
            token=config.reward.auth_token,
            timeout_s=config.reward.client_timeout_s,
            retries=config.reward.client_retries,
            batch_size=actors.reward_batch_size,
            max_concurrency=actors.reward_concurrency,
        )
        run_dir = config.run.run_dir
        self.worker = RolloutWorker(
            engine=self.engine,
            prompts=prompts,
            scoring=LoopScoring(self.client, self.loop),
            buffer=open_buffer(config.buffer, shared=shared_buffer),
            subscriber=open_subscriber(config.weight_sync, config.run),
            dead_letters=DeadLetterFile(run_dir / "dead_letter", self.actor_id),
            settings=RolloutSettings(
                actor_id=self.actor_id,
                n_samples=actors.n_samples,
                prompts_per_batch=actors.prompts_per_batch,
                sampling=SamplingSettings(
                    temperature=actors.temperature,
                    top_p=actors.top_p,
                    max_tokens=actors.max_tokens,
                    stop=tuple(actors.stop),
                ),
                max_staleness=config.buffer.max_staleness,
                high_water=config.buffer.high_water,
                item_retries=actors.reward_item_retries,
                pause_s=actors.pause_s,
                outage_wait_s=actors.reward_outage_s,
                limits=model_limits(config.model.path),  # poison groups go to dead letters, not the buffer
            ),
            cursor_file=run_dir / "actors" / f"{self.actor_id}.cursor.json",
            renderer=renderer,
            reference=reference,
        )
        self.eval_prompts = eval_records
        self.eval_rendered = eval_rendered
        self._stop = threading.Event()
        self.worker.sync_weights()
        freeze_startup_objects()  # the engine, vLLM and torch: full collections would stall steps

    def ready(self) -> dict[str, object]:
        """Answered once construction (engine start, weight catch-up) is done."""
        return {"actor_id": self.actor_id, "policy_version": self.engine.policy_version}

    def run(self, max_batches: int | None = None) -> dict[str, object]:
        """Generate until `stop()` (or `max_batches` generated batches); returns the final stats."""
        self._stop.clear()
        generated = 0
        while not self._stop.is_set() and (max_batches is None or generated < max_batches):
            outcome: StepOutcome = self.worker.step()
            generated += outcome == "generated"
        self.worker.drain()
        return self.stats()

    def evaluate(self, limit: int | None = None) -> dict[str, object]:
        """Greedy completions of the held-out prompts on the newest weights, scored by the same reward
        server; failed items are counted, not averaged in as 0."""
        from actors.sampling import PromptRequest

        records = self.eval_prompts[:limit]
        rendered = self.eval_rendered[:limit]
        if not records:
            raise ValueError("actors.eval_prompts is not set: there is nothing to evaluate on")
        self.worker.sync_weights()
        sampling = SamplingSettings(
            temperature=0.0, max_tokens=self.config.actors.max_tokens, stop=tuple(self.config.actors.stop)
        )
        with self.worker.engine_lock:
            version = self.engine.policy_version
            requests = [PromptRequest(r.prompt_id, p) for r, p in zip(records, rendered, strict=True)]
            groups = self.engine.generate(requests, 1, sampling, self.actor_id)
        items = [
            reward_item(record, prompt, group[0].completion_text)
            for record, prompt, group in zip(records, rendered, groups, strict=True)
        ]
        outcomes = self.loop.run(self.client.score(items))
        rewards = [o.reward for o in outcomes if o.reward is not None]
        return {
            "policy_version": version,
            "eval_reward_mean": sum(rewards) / len(rewards) if rewards else None,
            "eval_items": len(items),
            "eval_failed": len(items) - len(rewards),
        }

    def stop(self) -> None:
        self._stop.set()

    def stats(self) -> dict[str, object]:
        stats: dict[str, object] = dict(self.worker.stats.as_dict())
        stats["actor_id"] = self.actor_id
        stats["policy_version"] = self.engine.policy_version
        stats["reward_client"] = vars(self.client.stats).copy()
        return stats

    def close(self) -> None:
        """Finish the batch in flight, then release the prompt stream, the HTTP client, the event loop
        and the engine's processes, each even if an earlier step failed. Not while `run` loops."""
        self.stop()
        try:
            self.worker.close()
        finally:
            close_prompts = getattr(self.worker.prompts, "close", None)
            try:
                if close_prompts is not None:
                    close_prompts()
                self.loop.run(self.client.aclose())
            finally:
                self.loop.close()
                self.engine.close()


def engine_in_process(actors: ActorsConfig) -> bool:
    """`actors.engine_in_process`, or its default: in process for a CPU actor with one worker."""
    if actors.engine_in_process is not None:
        return actors.engine_in_process
    return actors.num_gpus == 0 and actors.tensor_parallel_size == 1


def _has_chat(records: list[PromptRecord]) -> bool:
    return any(record.messages is not None for record in records)
