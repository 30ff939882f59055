"""Chat prompts through the rollout loop, with an engine that tokenises as actors/engine.py does
(`core.tokenization.prompt_token_ids` on the request's prompt) but generates nothing real: the
rendered ids reach the engine, the samples and the buffer's groups; the reward server's items get
the rendered text and the messages; a template that cannot render skips the prompt, counted.
"""

from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from actors.dead_letter import DeadLetterFile
from actors.reward_client import RewardItem, RewardOutcome
from actors.rollout import RolloutSettings, RolloutWorker
from actors.sampling import PromptRequest, SamplingSettings
from core.buffer import MemoryBuffer
from core.config.buffer import BufferConfig
from core.prompts.file_source import FilePromptSource
from core.prompts.record import PromptRecord
from core.schemas import Sample
from core.tinymodels.tokenizer import build_bpe_tokenizer, build_tokenizer
from core.tokenization import ChatRenderer, prompt_token_ids, render_chat
from core.weight_sync.filesystem import FilesystemSubscriber

MESSAGES = [{"role": "user", "content": "12+30="}]
RECORDS = [
    PromptRecord("chat", None, reference="42", metadata={"level": 1}, messages=MESSAGES),
    PromptRecord("text", "1+1=", reference="2"),
]


class TokenisingEngine:
    """Turns each request into ids exactly as GenerationEngine.generate does, and answers "42"."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.policy_version: int | None = 0
        self.prompt_ids: list[list[int]] = []

    def generate(
        self, requests: Sequence[PromptRequest], n: int, sampling: SamplingSettings, actor_id: str
    ) -> list[list[Sample]]:
        groups = []
        for request in requests:
            ids = prompt_token_ids(self.tokenizer, request.prompt)
            self.prompt_ids.append(ids)
            groups.append(
                [Sample(request.prompt_id, ids, [5, 6], "42", [-0.1, -0.2], "stop", 0, actor_id)] * n
            )
        return groups

    def load_weights(self, published: object) -> int:
        raise AssertionError("no weights are published in these tests")


class RecordingScoring:
    """Scores every item 1.0 at once and keeps the items it was given."""

    def __init__(self) -> None:
        self.items: list[RewardItem] = []

    def submit(self, items: list[RewardItem]) -> "Future[list[RewardOutcome]]":
        self.items += items
        future: Future[list[RewardOutcome]] = Future()
        future.set_result([RewardOutcome(1.0, "ok", {}, None) for _ in items])
        return future


def make_worker(tmp_path: Path, tokenizer: Any, renderer: ChatRenderer | None) -> RolloutWorker:
    return RolloutWorker(
        engine=TokenisingEngine(tokenizer),
        prompts=FilePromptSource(RECORDS, seed=0),
        scoring=RecordingScoring(),
        buffer=MemoryBuffer(BufferConfig()),
        subscriber=FilesystemSubscriber(tmp_path / "weights"),
        dead_letters=DeadLetterFile(tmp_path / "dead_letter", "actor-0"),
        settings=RolloutSettings(
            actor_id="actor-0",
            n_samples=2,
            prompts_per_batch=2,
            sampling=SamplingSettings(),
            max_staleness=2,
            high_water=100,
        ),
        renderer=renderer,
    )


def test_chat_prompts_carry_the_rendered_ids_to_samples_groups_and_rewards(tmp_path: Path) -> None:
    tokenizer = build_bpe_tokenizer(["12+30=", "42", "1+1=", "2"])
    rendered = render_chat(tokenizer, MESSAGES, "bpe")
    worker = make_worker(tmp_path, tokenizer, ChatRenderer(tokenizer, "bpe"))
    assert worker.step() == "generated"
    worker.drain()
    groups = {
        group.samples[0].prompt_id: group for group in worker.buffer.sample(2, learner_version=0).groups
    }
    chat, text = groups["chat"], groups["text"]
    assert list(chat.prompt_token_ids) == list(rendered.token_ids) and chat.prompt == rendered.text
    assert all(list(sample.prompt_token_ids) == list(rendered.token_ids) for sample in chat.samples)
    assert list(text.prompt_token_ids) == prompt_token_ids(tokenizer, "1+1=") and text.prompt == "1+1="
    items = {item.prompt: item for item in worker.scoring.items}  # type: ignore[attr-defined]
    assert items[rendered.text].metadata == {"level": 1, "messages": MESSAGES}
    assert items["1+1="].metadata == {}
    assert worker.stats.prompts_unrenderable == 0
    worker.close()


@pytest.mark.parametrize("with_renderer", [True, False])
def test_a_chat_prompt_that_cannot_be_rendered_is_skipped_and_counted(
    tmp_path: Path, with_renderer: bool
) -> None:
    tokenizer = build_tokenizer()  # the char-level tokenizer: no chat template
    worker = make_worker(tmp_path, tokenizer, ChatRenderer(tokenizer, "char") if with_renderer else None)
    assert worker.step() == "generated"
    worker.drain()
    assert worker.stats.prompts_unrenderable == 1
    assert [group.samples[0].prompt_id for group in worker.buffer.sample(2, learner_version=0).groups] == [
        "text"
    ]
    worker.close()


def test_the_reward_server_takes_a_chat_prompts_item(tmp_path: Path) -> None:
    """The item a chat prompt's completion is scored with passes /v1/score as it is: rendered text
    in `prompt`, the messages in `metadata`."""
    from actors.event_loop import BackgroundLoop
    from actors.reward_client import RewardClient
    from actors.rollout import reward_item
    from core.config.reward import RewardConfig
    from reward_server.app import create_app
    from services.embedded_server import serve

    tokenizer = build_bpe_tokenizer(["12+30=", "42"])
    rendered = render_chat(tokenizer, MESSAGES, "bpe")
    item = reward_item(RECORDS[0], rendered, "42")
    assert (item.prompt, item.metadata["messages"]) == (rendered.text, MESSAGES)
    loop = BackgroundLoop()
    with serve(create_app(RewardConfig())) as url:
        client = RewardClient(url, retries=0, timeout_s=10)
        [outcome] = loop.run(client.score([item]))
        loop.run(client.aclose())
    loop.close()
    assert (outcome.status, outcome.reward) == ("ok", 1.0)  # exact match on the reference "42"
