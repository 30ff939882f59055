"""The rollout loop of one generation actor: prompts -> n samples each -> rewards -> ScoredGroups -> buffer.

One `step` is one batch of prompts. Scoring and pushing run beside generation: a batch's reward call
starts on a background event loop as soon as it is generated, and a pusher thread takes the batch
from there, waits for its rewards, and puts its groups into the buffer the moment they are back,
while the engine is already generating the next batch. So neither the reward server's latency nor
the buffer's (a Ray call, or a Redis transaction: a tenth of a tiny model's step,
benchmarks/actors_bench.py) holds up the engine, and no scored batch waits for a generation to end
before the learner can have it (it would be one generation staler, and a learner that drains its
backlog faster than the actor refills it would wait). At most `MAX_IN_FLIGHT` batches are being
scored or put while the engine generates. Between batches the worker picks up newly published
weights, and it pauses instead of generating while the buffer's fresh backlog is at its high-water
mark or while its weights are more than `max_staleness` versions behind the learner (what it made
would only be dropped as stale). The gate reads both from the last put's answer while puts are in
flight, and waits for them when they could reach the high-water mark, so an actor pauses no later
than unpipelined (other actors' puts, as before, show in the next answer: a shared buffer may pass
the mark by up to a batch per actor).

With `model.reference_on: actors` the pusher thread also stamps each sample with its reference
log-prob (core/reference_model.py) while the batch's reward call is in flight, so the learner's step
skips that forward pass.

Failures are explicit: items whose reward failed are scored again `item_retries` times; a group
that still has a failed sample is not pushed but written to the dead-letter file with the reasons.
So is a poison group, one the learner could not train on (a token id past the vocabulary, more
tokens than the model's positions: core/buffer/screening.py), checked against `settings.limits`.
Puts run one at a time, in order, and the prompt cursor is saved once a batch's put is answered, so a
restarted actor continues its shard and a batch whose put was lost in a crash is generated again;
after a failed put, later batches are neither pushed nor dead-lettered (their regeneration after the
restart would repeat them).

A chat prompt (a record with `messages`) is rendered once per batch by the policy's chat template
(`renderer`, core/tokenization.py): vLLM gets the rendered ids, which come back as the samples'
`prompt_token_ids` (what the learner trains on); the reward server gets the rendered text as `prompt`
and the messages in `metadata["messages"]`. A record the template refuses (or any chat record when the
policy has no template: a live stream can bring one mid-run) is skipped with a warning and counted in
`prompts_unrenderable`, rather than stopping the actor on every restart.
"""

import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from actors.dead_letter import DeadLetterFile, FailedSample
from actors.reward_client import RewardItem, RewardOutcome
from actors.sampling import PromptRequest, SamplingSettings
from core.buffer import ExperienceBuffer, PutResult
from core.buffer.screening import ModelLimits, poison_reason
from core.prompts import PromptSource
from core.prompts.file_source import PromptCursor
from core.prompts.record import PromptRecord, scoring_metadata
from core.schemas import Sample, ScoredGroup
from core.tokenization import ChatRenderer, ChatTemplateError, RenderedPrompt
from core.weight_sync import WeightSubscriber

log = logging.getLogger(__name__)

Prompt = str | RenderedPrompt  # a text prompt as it is, or a chat prompt rendered by the template
StepOutcome = Literal["generated", "backpressure", "stale_weights", "no_prompts"]


class Engine(Protocol):
    """What the loop needs of actors.engine.GenerationEngine."""

    policy_version: int | None

    def generate(
        self, requests: Sequence[PromptRequest], n: int, sampling: SamplingSettings, actor_id: str
    ) -> list[list[Sample]]: ...

    def load_weights(self, published: object) -> int: ...


class ReferenceStamping(Protocol):
    """What the loop needs of core.reference_model.ReferenceModel when the actors run the reference."""

    def score_samples(self, samples: Sequence[Sample]) -> list[Sample]: ...


class Scoring(Protocol):
    """Starts a reward call for `items` and returns at once; the future gives one outcome per item."""

    def submit(self, items: list[RewardItem]) -> "Future[list[RewardOutcome]]": ...


# How often a paused actor checks whether it may go on (a Ray or Redis round trip each time).
PAUSE_POLL_S = 0.02
# Batches being scored or put while the engine generates the next one: one waiting for its rewards
# and one being put is the depth that hides both latencies; more would only hold more groups back.
MAX_IN_FLIGHT = 2


@dataclass(frozen=True)
class RolloutSettings:
    actor_id: str
    n_samples: int
    prompts_per_batch: int
    sampling: SamplingSettings
    max_staleness: int
    high_water: int
    item_retries: int = 1
    pause_s: float = 0.5
    outage_wait_s: float = 300.0
    limits: ModelLimits | None = None  # the policy's vocabulary and positions; None: not screened


@dataclass
class RolloutStats:
    policy_version: int | None = None
    batches: int = 0
    groups_pushed: int = 0
    groups_dead_lettered: int = 0
    samples_generated: int = 0
    tokens_generated: int = 0
    generate_seconds: float = 0.0
    items_failed: int = 0
    items_rescored: int = 0
    outage_waits: int = 0
    weight_loads: int = 0
    pauses_backpressure: int = 0
    pauses_stale: int = 0
    paused_seconds: float = 0.0  # time spent in those pauses
    reference_seconds: float = 0.0  # stamping reference log-probs (`model.reference_on: actors`)
    reward_sum: float = 0.0
    rewards_counted: int = 0
    prompts_unrenderable: int = 0  # chat prompts the policy's chat template could not render (skipped)
    started_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, float | int | None]:
        stats = asdict(self)
        elapsed = max(time.time() - self.started_at, 1e-9)
        stats["generate_tokens_per_s"] = self.tokens_generated / max(self.generate_seconds, 1e-9)
        stats["tokens_per_s"] = self.tokens_generated / elapsed
        stats["reward_mean"] = self.reward_sum / self.rewards_counted if self.rewards_counted else None
        return stats


@dataclass
class PendingBatch:
    prompts: list[PromptRecord]
    rendered: list[Prompt]  # each record's prompt as generated from (rendered once, reused to rescore)
    samples: list[list[Sample]]
    outcomes: "Future[list[RewardOutcome]]"
    cursor_after: PromptCursor


@dataclass
class InFlight:
    """A batch from the start of its reward call until its put is answered. `put` is its job on the
    pusher thread and gives the put's answer (None when the batch had nothing to push); `groups` is
    the most it can add to the backlog."""

    groups: int
    put: "Future[PutResult | None]"


class RolloutWorker:
    def __init__(
        self,
        engine: Engine,
        prompts: PromptSource,
        scoring: Scoring,
        buffer: ExperienceBuffer,
        subscriber: WeightSubscriber,
        dead_letters: DeadLetterFile,
        settings: RolloutSettings,
        cursor_file: Path | None = None,
        renderer: ChatRenderer | None = None,
        reference: ReferenceStamping | None = None,
    ) -> None:
        self.engine = engine
        self.reference = reference  # None: the learner computes the reference log-probs
        self.renderer = renderer  # None: no tokenizer at hand, so chat prompts cannot be rendered
        self.prompts = prompts
        self.scoring = scoring
        self.buffer = buffer
        self.subscriber = subscriber
        self.dead_letters = dead_letters
        self.settings = settings
        self.cursor_file = cursor_file
        self.stats = RolloutStats(policy_version=engine.policy_version)
        self._in_flight: deque[InFlight] = deque()  # oldest first
        self._put_failure: BaseException | None = None  # once a put failed, nothing more is generated
        self._last_put: PutResult | None = None  # the newest answered put's answer (set by the pusher)
        self._pusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{settings.actor_id}-push")
        self._backpressure = False
        # vLLM's LLM is not thread-safe: evaluation (another thread of the actor) shares the engine.
        self.engine_lock = threading.Lock()
        if cursor_file is not None and cursor_file.is_file():
            prompts.cursor = PromptCursor.from_dict(json.loads(cursor_file.read_text()))
            log.info("%s resumes its prompts at %s", settings.actor_id, prompts.cursor)

    def sync_weights(self) -> bool:
        """Load the newest published weights if they are newer than the engine's; True if loaded.

        A failed or mismatching load raises (WeightSyncError): generating on unknown weights and
        stamping them with a version would poison the buffer, so the actor stops instead."""
        latest = self.subscriber.latest_version()
        current = self.engine.policy_version
        if latest is None or (current is not None and latest <= current):
            return False
        published = self.subscriber.latest()
        if published is None:
            return False
        with self.engine_lock:
            self.stats.policy_version = self.engine.load_weights(published)
        self.stats.weight_loads += 1
        log.info("%s loaded weights v%s", self.settings.actor_id, self.stats.policy_version)
        return True

    def step(self) -> StepOutcome:
        if self._put_failure is not None:
            raise RuntimeError(f"batch not generated: an earlier put failed ({self._put_failure})")
        self.sync_weights()
        self._collect_finished()  # a put that failed stops the actor here, before anything more is made
        gate = self._gate()
        if gate is not None:
            self.drain()
            self._pause(gate)
            return gate
        records = self.prompts.next_batch(self.settings.prompts_per_batch)
        if not records:  # a live stream with nothing new in its wait: finish what is in flight
            self.drain()
            return "no_prompts"
        cursor_after = self.prompts.cursor
        records, rendered = self._render(records)
        if not records:  # every prompt of the batch was refused by the chat template
            self.drain()
            return "no_prompts"
        requests = [PromptRequest(r.prompt_id, prompt) for r, prompt in zip(records, rendered, strict=True)]
        self._wait_in_flight(keep=MAX_IN_FLIGHT)
        started = time.perf_counter()
        with self.engine_lock:
            samples = self.engine.generate(
                requests,
                n=self.settings.n_samples,
                sampling=self.settings.sampling,
                actor_id=self.settings.actor_id,
            )
        self.stats.generate_seconds += time.perf_counter() - started
        flat = [sample for group in samples for sample in group]
        self.stats.samples_generated += len(flat)
        self.stats.tokens_generated += sum(len(s.completion_token_ids) for s in flat)
        outcomes = self.scoring.submit(_items(records, rendered, samples))
        batch = PendingBatch(records, rendered, samples, outcomes, cursor_after)
        earlier = self._in_flight[-1].put if self._in_flight else None
        put = self._pusher.submit(self._finish, batch, earlier)
        self._in_flight.append(InFlight(len(records), put))
        self.stats.batches += 1
        return "generated"

    def _render(self, records: list[PromptRecord]) -> tuple[list[PromptRecord], list[Prompt]]:
        """The records that can be generated for, with their prompts: text as it is, chat messages
        rendered by the template; the ones it refuses are logged, counted and left out."""
        kept: list[PromptRecord] = []
        rendered: list[Prompt] = []
        for record in records:
            try:
                rendered.append(render_prompt(record, self.renderer))
            except ChatTemplateError as error:
                self.stats.prompts_unrenderable += 1
                log.warning("%s skipped prompt %s: %s", self.settings.actor_id, record.prompt_id, error)
                continue
            kept.append(record)
        return kept, rendered

    def drain(self) -> None:
        """Wait until every batch in flight is scored and its groups pushed (or dead-lettered), and its
        put answered; a failed put (the buffer unreachable after its retries) raises here."""
        self._wait_in_flight(keep=0)

    def _wait_in_flight(self, keep: int) -> None:
        """Wait for the oldest batches in flight until at most `keep` remain; raises the first failure."""
        self._collect_finished()
        while len(self._in_flight) > keep:
            self._answered(self._in_flight.popleft())

    def _collect_finished(self) -> None:
        """Forget the batches whose puts were answered, oldest first; raises the first one that failed
        (the batches after it then fail too, unpushed: see `_finish`)."""
        while self._in_flight and self._in_flight[0].put.done():
            self._answered(self._in_flight.popleft())

    def _answered(self, batch: InFlight) -> None:
        try:
            batch.put.result()
        except BaseException as error:
            self._put_failure = self._put_failure or error
            raise

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self._pusher.shutdown()

    def _gate(self) -> StepOutcome | None:
        if self._may_reach_high_water():
            self.drain()  # near the mark: the exact backlog, not a guess
        version = self.engine.policy_version
        if version is not None and self._learner_version() - version > self.settings.max_staleness:
            self.stats.pauses_stale += 1
            return "stale_weights"
        if self._backpressure:
            self.drain()  # stats() never runs beside a put
            if self.buffer.stats().backlog >= self.settings.high_water:
                self.stats.pauses_backpressure += 1
                return "backpressure"
            self._backpressure = False
        return None

    def _pause(self, gate: StepOutcome) -> None:
        """Wait until the gate may be open, at most `pause_s`: the backlog fell below the mark, or newer
        weights were published. Checked every `PAUSE_POLL_S`, because a learner drains a backlog of
        tiny-model groups in a fraction of a second, and a fixed pause would leave it waiting for data
        (in the demo, a 0.5 s pause cost a third of the learner's time)."""
        started = time.monotonic()
        deadline = started + self.settings.pause_s
        version = self.engine.policy_version
        while (now := time.monotonic()) < deadline:
            time.sleep(min(PAUSE_POLL_S, deadline - now))
            if gate == "backpressure" and self.buffer.stats().backlog < self.settings.high_water:
                break
            if gate == "stale_weights" and (self.subscriber.latest_version() or 0) > (version or 0):
                break
        self.stats.paused_seconds += time.monotonic() - started

    def _may_reach_high_water(self) -> bool:
        """Whether the puts in flight could bring the backlog to the mark (the learner only lowers it)."""
        unanswered = sum(batch.groups for batch in self._in_flight if not batch.put.done())
        if not unanswered:
            return False
        known = self._last_put.backlog if self._last_put is not None else 0
        return known + unanswered >= self.settings.high_water

    def _learner_version(self) -> int:
        # While puts are in flight, the last answered put says the learner's version a batch or two
        # ago: close enough for a bound counted in versions, and asking the buffer now would wait behind
        # those puts (a Ray actor answers its calls in order). With nothing in flight, or no answer yet,
        # the buffer is asked: an answer would otherwise age while the actor pauses.
        if self._last_put is not None and any(not batch.put.done() for batch in self._in_flight):
            return self._last_put.learner_version
        return self.buffer.learner_version()

    def _finish(self, batch: PendingBatch, earlier: "Future[PutResult | None] | None") -> PutResult | None:
        """On the pusher thread, one batch at a time in order: wait for the batch's rewards (scoring
        again what failed), dead-letter what cannot be trained on, put the rest, then save the cursor
        past the batch. After an earlier batch's put failed it does nothing and fails too: its dead
        letters would be written again when the restarted actor regenerates it."""
        if earlier is not None and earlier.exception() is not None:  # done: the pusher runs in order
            raise RuntimeError(f"batch not pushed: an earlier put failed ({earlier.exception()})")
        samples = self._stamp_reference(batch.samples)  # while the reward call is in flight
        outcomes = self._rescore_failed(batch, batch.outcomes.result())
        good: list[ScoredGroup] = []
        cursor = 0
        for record, prompt, group in zip(batch.prompts, batch.rendered, samples, strict=True):
            group_outcomes = outcomes[cursor : cursor + len(group)]
            cursor += len(group)
            group_id = f"{self.settings.actor_id}-{uuid.uuid4().hex[:16]}"
            text = prompt_text(prompt)
            if not all(outcome.status == "ok" for outcome in group_outcomes):
                self._dead_letter(group_id, record, text, group, group_outcomes)
                continue
            scored = _scored_group(group_id, record, text, group, group_outcomes)
            poison = poison_reason(scored, self.settings.limits) if self.settings.limits else None
            if poison is None:
                good.append(scored)
            else:  # never pushed: a learner would crash on it at every redelivery
                self._dead_letter(group_id, record, text, group, group_outcomes, f"poison group: {poison}")
        result = self.buffer.put(good) if good else None
        self._save_cursor(batch.cursor_after)
        if result is not None:
            self._last_put = result
            self._backpressure = result.paused
        self.stats.groups_pushed += len(good)
        for group in good:
            self.stats.reward_sum += sum(r for r in group.rewards if r is not None)
            self.stats.rewards_counted += len(group.rewards)
        return result

    def _stamp_reference(self, samples: list[list[Sample]]) -> list[list[Sample]]:
        """The batch's samples with their reference log-probs, when this actor runs the reference."""
        if self.reference is None:
            return samples
        started = time.perf_counter()
        stamped = iter(self.reference.score_samples([sample for group in samples for sample in group]))
        self.stats.reference_seconds += time.perf_counter() - started
        return [[next(stamped) for _ in group] for group in samples]

    def _rescore_failed(self, batch: PendingBatch, outcomes: list[RewardOutcome]) -> list[RewardOutcome]:
        if all(outcome.status == "ok" for outcome in outcomes):
            return outcomes  # the usual case: nothing to rebuild the items for
        outcomes = list(outcomes)
        items = _items(batch.prompts, batch.rendered, batch.samples)
        outcomes = self._wait_out_outage(items, outcomes)
        for _ in range(self.settings.item_retries):
            failed = [index for index, outcome in enumerate(outcomes) if outcome.status != "ok"]
            if not failed:
                break
            self.stats.items_rescored += len(failed)
            retried = self.scoring.submit([items[index] for index in failed]).result()
            for index, outcome in zip(failed, retried, strict=True):
                outcomes[index] = outcome
        self.stats.items_failed += sum(outcome.status != "ok" for outcome in outcomes)
        return outcomes

    def _wait_out_outage(self, items: list[RewardItem], outcomes: list[RewardOutcome]) -> list[RewardOutcome]:
        """While every item failed for lack of a server answer (down, restarting, overloaded), hold the
        batch and try again with growing pauses, up to `outage_wait_s`: an outage should cost time,
        not the batch (nor a run through the prompt set dead-lettering everything)."""
        waited, pause = 0.0, self.settings.pause_s
        while (
            outcomes and all(o.transport_failure for o in outcomes) and waited < self.settings.outage_wait_s
        ):
            if waited == 0:
                log.warning("%s: reward server unavailable (%s); holding the batch", self.settings.actor_id,
                            outcomes[0].error)  # fmt: skip
            self.stats.outage_waits += 1
            time.sleep(pause)
            waited += pause
            pause = min(pause * 2, 10.0)
            outcomes = list(self.scoring.submit(items).result())
        return outcomes

    def _dead_letter(
        self,
        group_id: str,
        record: PromptRecord,
        text: str,
        group: list[Sample],
        outcomes: list[RewardOutcome],
        reason: str | None = None,
    ) -> None:
        if reason is None:
            errors = sorted({o.error or o.status for o in outcomes if o.status != "ok"})
            reason = (
                f"{sum(o.status != 'ok' for o in outcomes)} of {len(outcomes)} rewards failed after "
                f"{self.settings.item_retries} re-scoring attempt(s): " + "; ".join(errors)[:2000]
            )
        self.dead_letters.write(
            group_id,
            text,
            record.reference,
            record.tests,
            [FailedSample(s, o.status, o.error, o.reward) for s, o in zip(group, outcomes, strict=True)],
            reason,
        )
        self.stats.groups_dead_lettered += 1
        log.warning("%s dead-lettered group %s: %s", self.settings.actor_id, group_id, reason)

    def _save_cursor(self, cursor: PromptCursor) -> None:
        if self.cursor_file is None:
            return
        self.cursor_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.cursor_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(cursor.to_dict()))
        os.replace(temporary, self.cursor_file)


def render_prompt(record: PromptRecord, renderer: ChatRenderer | None) -> Prompt:
    """What to generate from: a text prompt as it is (vLLM's tokenisation of it, core/tokenization.py),
    a chat prompt rendered by the policy's template (ChatTemplateError when it cannot be)."""
    if record.messages is None:
        assert record.prompt is not None  # a record holds one of the two
        return record.prompt
    if renderer is None:
        raise ChatTemplateError("chat prompts need the policy's chat template, and no tokenizer was given")
    return renderer(record.messages)


def prompt_text(prompt: Prompt) -> str:
    """The prompt as text: a chat prompt's rendered text, which is what the policy saw."""
    return prompt.text if isinstance(prompt, RenderedPrompt) else prompt


def reward_item(record: PromptRecord, prompt: Prompt, completion: str) -> RewardItem:
    """The reward server's view of one completion: the prompt's text, and a chat prompt's messages in
    the metadata (core.prompts.record.scoring_metadata)."""
    metadata = scoring_metadata(record.metadata, record.messages)
    return RewardItem(prompt_text(prompt), completion, record.reference, record.tests, metadata)


def _items(
    records: list[PromptRecord], prompts: list[Prompt], samples: list[list[Sample]]
) -> list[RewardItem]:
    """One reward item per sample, flattened prompt by prompt."""
    return [
        reward_item(record, prompt, sample.completion_text)
        for record, prompt, group in zip(records, prompts, samples, strict=True)
        for sample in group
    ]


def _scored_group(
    group_id: str, record: PromptRecord, text: str, group: list[Sample], outcomes: list[RewardOutcome]
) -> ScoredGroup:
    return ScoredGroup(
        group_id=group_id,
        prompt=text,
        prompt_token_ids=group[0].prompt_token_ids,
        samples=group,
        rewards=[outcome.reward for outcome in outcomes],
        reward_status=[outcome.status for outcome in outcomes],
        reward_details=[outcome.scores for outcome in outcomes],
        source="online",
        reference=record.reference,
    )
