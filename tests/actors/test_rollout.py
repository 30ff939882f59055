"""The rollout loop's logic with a scripted engine (no vLLM) but the real pieces around it: the reward
server over HTTP, the reward client on its background loop, the in-process buffer, filesystem weights.

What is checked: groups reach the buffer scored and stamped with the engine's version; scoring and the
put run beside the next generation, and a scored batch is pushed without waiting for it to end; new
weights are picked up between batches; failed rewards are retried, then dead-lettered, never pushed;
a failed put stops the actor; it pauses on backpressure and on stale weights; the prompt cursor
survives a restart.
"""

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import msgspec
import pytest
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from actors.dead_letter import DeadLetterFile, read_dead_letters
from actors.event_loop import BackgroundLoop
from actors.generator import LoopScoring
from actors.reward_client import RewardClient
from actors.rollout import RolloutSettings, RolloutWorker
from actors.sampling import PromptRequest, SamplingSettings
from core.buffer import MemoryBuffer
from core.config.buffer import BufferConfig
from core.config.reward import RewardConfig
from core.prompts.file_source import FilePromptSource
from core.prompts.record import PromptRecord
from core.schemas import Sample
from core.weight_sync.filesystem import FilesystemPublisher, FilesystemSubscriber
from core.weight_sync.manifest import PublishedWeights
from services.embedded_server import serve

PROMPTS = [PromptRecord(f"p{i}", f"{i}+{i}=", reference=str(2 * i)) for i in range(10)]


class ScriptedEngine:
    """Answers right on even sample indices and wrong on odd ones; 'loading' weights sets the version."""

    def __init__(self) -> None:
        self.policy_version: int | None = 0
        self.calls: list[list[str]] = []

    def generate(
        self, requests: Sequence[PromptRequest], n: int, sampling: SamplingSettings, actor_id: str
    ) -> list[list[Sample]]:
        self.calls.append([request.prompt_id for request in requests])
        assert self.policy_version is not None
        groups = []
        for request in requests:
            answer = str(2 * int(request.prompt.split("+")[0]))
            texts = [answer if index % 2 == 0 else answer + "1" for index in range(n)]
            groups.append(
                [
                    Sample(
                        request.prompt_id,
                        [1, 2],
                        [3] * len(text),
                        text,
                        [-0.5] * len(text),
                        "stop",
                        self.policy_version,
                        actor_id,
                    )
                    for text in texts
                ]
            )
        return groups

    def load_weights(self, published: PublishedWeights) -> int:
        self.policy_version = published.version
        return published.version


@pytest.fixture(scope="module")
def reward_url() -> Iterator[str]:
    from reward_server.app import create_app

    with serve(create_app(RewardConfig())) as url:
        yield url


@pytest.fixture
def loop() -> Iterator[BackgroundLoop]:
    background = BackgroundLoop()
    yield background
    background.close()


def make_worker(
    tmp_path: Path,
    url: str,
    loop: BackgroundLoop,
    buffer: MemoryBuffer | None = None,
    high_water: int = 100,
    max_staleness: int = 2,
    engine: ScriptedEngine | None = None,
    outage_wait_s: float = 0.05,
    reference: "LengthReference | None" = None,
) -> RolloutWorker:
    client = RewardClient(url, retries=1, backoff_s=0.01, timeout_s=10)
    return RolloutWorker(
        engine=engine or ScriptedEngine(),
        prompts=FilePromptSource(PROMPTS, seed=3),
        scoring=LoopScoring(client, loop),
        buffer=buffer or MemoryBuffer(BufferConfig(high_water=high_water)),
        subscriber=FilesystemSubscriber(tmp_path / "weights"),
        dead_letters=DeadLetterFile(tmp_path / "dead_letter", "actor-0"),
        settings=RolloutSettings(
            actor_id="actor-0",
            n_samples=4,
            prompts_per_batch=3,
            sampling=SamplingSettings(),
            max_staleness=max_staleness,
            high_water=high_water,
            item_retries=1,
            pause_s=0.01,
            outage_wait_s=outage_wait_s,
        ),
        cursor_file=tmp_path / "actor-0.cursor.json",
        reference=reference,
    )


def publish(tmp_path: Path, version: int) -> None:
    FilesystemPublisher(tmp_path / "weights").publish({"w": torch.full((2,), float(version))}, version)


def test_groups_are_scored_and_pushed_beside_generation(tmp_path: Path, reward_url: str, loop) -> None:  # type: ignore[no-untyped-def]
    worker = make_worker(tmp_path, reward_url, loop)
    assert worker.step() == "generated"  # returns with batch 1's reward call and put in flight
    assert worker.step() == "generated"
    worker.drain()
    batch = worker.buffer.sample(6, learner_version=0)
    assert len(batch.groups) == 6
    for group in batch.groups:
        assert group.rewards == [1.0, 0.0, 1.0, 0.0]
        assert group.reward_status == ["ok"] * 4 and group.reward_details[0] == {"exact_match": 1.0}
        assert group.policy_version == 0 and group.source == "online"
        assert group.reference == str(2 * int(group.prompt.split("+")[0]))
    assert worker.stats.groups_pushed == 6
    assert worker.stats.as_dict()["reward_mean"] == 0.5


class LengthReference:
    """A reference whose log-prob of a completion is minus its length (the loop only passes it on)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def score_samples(self, samples):  # type: ignore[no-untyped-def]
        self.calls.append(len(samples))
        return [
            msgspec.structs.replace(s, ref_logprob=-float(len(s.completion_token_ids)), ref_model="ref-id")
            for s in samples
        ]


def test_an_actor_running_the_reference_stamps_every_sample_it_pushes(
    tmp_path: Path, reward_url: str, loop
) -> None:  # type: ignore[no-untyped-def]
    reference = LengthReference()
    worker = make_worker(tmp_path, reward_url, loop, reference=reference)
    assert worker.step() == "generated"
    worker.drain()
    batch = worker.buffer.sample(3, learner_version=0)
    assert reference.calls == [12]  # one call per batch: 3 prompts x 4 samples
    for group in batch.groups:
        assert [s.ref_logprob for s in group.samples] == [
            -float(len(s.completion_token_ids)) for s in group.samples
        ]
        assert {s.ref_model for s in group.samples} == {"ref-id"}
        assert group.rewards == [1.0, 0.0, 1.0, 0.0]  # the samples keep their order and rewards
    assert worker.stats.reference_seconds > 0


class GatedBuffer(MemoryBuffer):
    """A buffer whose puts wait for `open` to be set, as a slow Ray call or Redis transaction would."""

    def __init__(self) -> None:
        super().__init__(BufferConfig())
        self.open = threading.Event()

    def put(self, groups):  # type: ignore[no-untyped-def]
        assert self.open.wait(timeout=30)
        return super().put(groups)


def test_a_put_runs_while_the_next_batch_generates(tmp_path: Path, reward_url: str, loop) -> None:  # type: ignore[no-untyped-def]
    buffer = GatedBuffer()
    worker = make_worker(tmp_path, reward_url, loop, buffer=buffer)
    worker.step()
    assert worker.step() == "generated"  # generated while batch 1's put waits
    assert worker.step() == "generated"  # and so is batch 3: two batches in flight beside it
    assert worker.stats.groups_pushed == 0 and not (tmp_path / "actor-0.cursor.json").exists()
    fourth = threading.Thread(target=worker.step)
    fourth.start()  # no deeper: batch 4 waits for put 1 before it generates
    time.sleep(0.3)
    assert len(worker.engine.calls) == 3 and fourth.is_alive()
    buffer.open.set()
    fourth.join(timeout=30)
    assert len(worker.engine.calls) == 4 and worker.stats.groups_pushed >= 3
    worker.drain()
    assert buffer.stats().backlog == 12 and worker.stats.groups_pushed == 12
    # The cursor is saved once a put is answered: a crash before that regenerates the batch.
    assert (tmp_path / "actor-0.cursor.json").exists()


def test_new_weights_are_loaded_between_batches(tmp_path: Path, reward_url: str, loop) -> None:  # type: ignore[no-untyped-def]
    worker = make_worker(tmp_path, reward_url, loop)
    worker.step()
    publish(tmp_path, 1)
    publish(tmp_path, 2)
    worker.step()
    worker.drain()
    versions = sorted(group.policy_version for group in worker.buffer.sample(6, learner_version=2).groups)
    assert versions == [0, 0, 0, 2, 2, 2]
    assert worker.stats.weight_loads == 1 and worker.stats.policy_version == 2
    worker.close()


def test_failed_rewards_are_retried_then_dead_lettered(tmp_path: Path, loop) -> None:  # type: ignore[no-untyped-def]
    """The server fails every item of the first prompt it sees in each request: those groups must
    not reach the buffer as if scored; they land in the dead-letter file with the reason."""
    app, requests = FastAPI(), []

    @app.post("/v1/score")
    async def score(request: Request) -> JSONResponse:
        items = (await request.json())["items"]
        requests.append(len(items))
        broken = items[0]["prompt"]
        results = [
            {"reward": None, "status": "error", "scores": {}, "error": "judge crashed"}
            if item["prompt"] == broken
            else {"reward": 1.0, "status": "ok", "scores": {"judge": 1.0}, "error": None}
            for item in items
        ]
        return JSONResponse({"results": results, "server_version": "t", "config_hash": "t"})

    with serve(app) as url:
        worker = make_worker(tmp_path, url, loop)
        worker.step()
        worker.drain()
    assert requests == [12, 4]  # the 4 failed items were scored once more, and failed again
    assert worker.buffer.stats().backlog == 2
    assert worker.stats.groups_dead_lettered == 1 and worker.stats.items_failed == 4
    (letter,) = read_dead_letters(tmp_path / "dead_letter")
    assert "4 of 4 rewards failed" in letter["reason"] and "judge crashed" in letter["reason"]
    assert [s["status"] for s in letter["samples"]] == ["error"] * 4
    assert all(s["reward"] is None for s in letter["samples"])


def test_a_retry_that_succeeds_pushes_the_group(tmp_path: Path, loop) -> None:  # type: ignore[no-untyped-def]
    app, requests = FastAPI(), []

    @app.post("/v1/score")
    async def score(request: Request) -> JSONResponse:
        items = (await request.json())["items"]
        requests.append(len(items))
        first_call = len(requests) == 1
        results = [
            {"reward": None, "status": "timeout", "scores": {}, "error": "slow judge"}
            if first_call and index == 0
            else {"reward": 0.25, "status": "ok", "scores": {}, "error": None}
            for index in range(len(items))
        ]
        return JSONResponse({"results": results, "server_version": "t", "config_hash": "t"})

    with serve(app) as url:
        worker = make_worker(tmp_path, url, loop)
        worker.step()
        worker.drain()
    assert requests == [12, 1]
    assert worker.buffer.stats().backlog == 3 and worker.stats.groups_dead_lettered == 0


def test_an_unreachable_reward_server_dead_letters_everything(tmp_path: Path, loop) -> None:  # type: ignore[no-untyped-def]
    from services.embedded_server import free_port

    worker = make_worker(tmp_path, f"http://127.0.0.1:{free_port()}", loop)
    worker.step()
    worker.drain()
    assert worker.buffer.stats().backlog == 0
    letters = read_dead_letters(tmp_path / "dead_letter")
    assert len(letters) == 3 and all("unreachable" in letter["reason"] for letter in letters)


def test_a_reward_server_outage_holds_the_batch_until_it_is_back(tmp_path: Path, loop) -> None:  # type: ignore[no-untyped-def]
    from reward_server.app import create_app
    from services.embedded_server import free_port

    port = free_port()
    worker = make_worker(tmp_path, f"http://127.0.0.1:{port}", loop, outage_wait_s=60)
    worker.step()
    finished = threading.Thread(target=worker.drain)
    finished.start()
    time.sleep(1.0)  # the batch is held while nothing answers on the port
    assert finished.is_alive() and worker.stats.outage_waits >= 1
    with serve(create_app(RewardConfig()), port=port):
        finished.join(timeout=30)
    assert not finished.is_alive()
    assert worker.buffer.stats().backlog == 3 and worker.stats.groups_dead_lettered == 0


def test_a_scored_batch_is_pushed_while_the_next_one_generates(tmp_path: Path, reward_url: str, loop) -> None:  # type: ignore[no-untyped-def]
    """Batch 1's groups reach the buffer as soon as its rewards are back, during batch 2's generation
    (a generation fresher than after it, and a learner that has drained its backlog gets them then)."""
    buffer = MemoryBuffer(BufferConfig())
    backlog_seen_while_generating: list[int] = []

    class SlowEngine(ScriptedEngine):
        def generate(self, requests, n, sampling, actor_id="local"):  # type: ignore[no-untyped-def]
            if self.calls:  # batch 2: wait here for batch 1's put to land in the buffer
                deadline = time.monotonic() + 20
                while buffer.stats().backlog < 3 and time.monotonic() < deadline:
                    time.sleep(0.01)
                backlog_seen_while_generating.append(buffer.stats().backlog)
            return super().generate(requests, n, sampling, actor_id)

    worker = make_worker(tmp_path, reward_url, loop, buffer=buffer, engine=SlowEngine())
    worker.step()
    worker.step()
    assert backlog_seen_while_generating == [3]
    worker.close()


def test_backpressure_pauses_generation_until_the_learner_consumes(
    tmp_path: Path, reward_url: str, loop
) -> None:  # type: ignore[no-untyped-def]
    buffer = MemoryBuffer(BufferConfig(high_water=3))
    engine = ScriptedEngine()
    worker = make_worker(tmp_path, reward_url, loop, buffer=buffer, high_water=3, engine=engine)
    assert worker.step() == "generated"
    # Batch 1's put in flight could reach the mark: the gate waits for its answer, which says it did.
    assert worker.step() == "backpressure"
    assert buffer.stats().backlog == 3
    calls = len(engine.calls)
    assert worker.step() == "backpressure" and len(engine.calls) == calls
    batch = buffer.sample(3, learner_version=0)
    buffer.ack(batch.delivery_ids)
    assert worker.step() == "generated"
    assert worker.stats.pauses_backpressure == 2
    worker.close()


def test_a_pause_ends_as_soon_as_the_learner_drains_the_backlog(
    tmp_path: Path, reward_url: str, loop
) -> None:  # type: ignore[no-untyped-def]
    buffer = MemoryBuffer(BufferConfig(high_water=3))
    worker = make_worker(tmp_path, reward_url, loop, buffer=buffer, high_water=3)
    worker.settings = replace(worker.settings, pause_s=30.0)
    worker.step()
    worker.drain()  # the backlog (3) is at the mark
    drained = threading.Timer(0.3, lambda: buffer.ack(buffer.sample(3, learner_version=0).delivery_ids))
    drained.start()
    started = time.monotonic()
    assert worker.step() == "backpressure"
    waited = time.monotonic() - started
    assert 0.3 <= waited < 10.0  # paused until the drain, not for the whole 30 s
    assert 0.3 <= worker.stats.paused_seconds < 10.0
    assert worker.step() == "generated"
    worker.close()


def test_stale_weights_pause_until_new_ones_are_published(tmp_path: Path, reward_url: str, loop) -> None:  # type: ignore[no-untyped-def]
    buffer = MemoryBuffer(BufferConfig())
    buffer.set_learner_version(3)
    worker = make_worker(tmp_path, reward_url, loop, buffer=buffer, max_staleness=2)
    assert worker.step() == "stale_weights"
    publish(tmp_path, 1)
    assert worker.step() == "generated"
    assert worker.stats.pauses_stale == 1 and worker.engine.policy_version == 1
    worker.close()


def test_a_restarted_worker_continues_its_prompt_shard(tmp_path: Path, reward_url: str, loop) -> None:  # type: ignore[no-untyped-def]
    first = make_worker(tmp_path, reward_url, loop)
    first.step()
    first.step()
    first.drain()
    seen = [prompt for call in first.engine.calls for prompt in call]
    second = make_worker(tmp_path, reward_url, loop)  # same cursor file: a restart
    second.step()
    reference = FilePromptSource(PROMPTS, seed=3)
    expected = [record.prompt_id for record in reference.next_batch(9)]
    assert seen + second.engine.calls[0] == expected
    second.close()


class FailingBuffer(GatedBuffer):
    """A buffer whose puts fail, as Redis does once its retries are spent; a put fails only once
    `open` is set, so the test, not the pusher thread's speed, decides when."""

    def put(self, groups):  # type: ignore[no-untyped-def]
        assert self.open.wait(timeout=30)
        raise ConnectionError("buffer unreachable after 5 retries")


def test_a_failed_put_stops_the_worker_before_the_next_batch_is_dead_lettered_or_pushed(
    tmp_path: Path, reward_url: str, loop
) -> None:  # type: ignore[no-untyped-def]
    buffer = FailingBuffer()
    worker = make_worker(tmp_path, reward_url, loop, buffer=buffer)
    worker.step()
    worker.step()  # batch 2 generated while batch 1's put is still in flight
    buffer.open.set()  # batch 1's put fails on the pusher thread
    with pytest.raises(ConnectionError, match="unreachable"):
        worker.drain()
    with pytest.raises(RuntimeError, match="earlier put failed"):
        worker.drain()  # batch 2 is neither pushed nor dead-lettered
    with pytest.raises(RuntimeError, match="earlier put failed"):
        worker.step()  # and the worker generates nothing more
    assert not (tmp_path / "actor-0.cursor.json").exists()  # so a restart generates batch 1 again
    assert read_dead_letters(tmp_path / "dead_letter") == []
    worker.close()
