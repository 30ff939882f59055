"""A poison group (a token id past the vocabulary, more tokens than the model's positions) that an actor
made is dead-lettered with its reason instead of pushed; the good groups of the same batch are stored,
and the learner never samples the poison one."""

from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

from actors.dead_letter import DeadLetterFile, read_dead_letters
from actors.reward_client import RewardItem, RewardOutcome
from actors.rollout import RolloutSettings, RolloutWorker
from actors.sampling import PromptRequest, SamplingSettings
from core.buffer import MemoryBuffer
from core.buffer.screening import ModelLimits
from core.config.buffer import BufferConfig
from core.prompts.file_source import FilePromptSource
from core.prompts.record import PromptRecord
from core.schemas import Sample
from core.weight_sync.filesystem import FilesystemSubscriber

LIMITS = ModelLimits(vocab_size=300, max_positions=12)
PROMPTS = [PromptRecord(f"p{i}", f"{i}+{i}=", reference=str(2 * i)) for i in range(3)]


class PoisoningEngine:
    """p1's samples hold a token id past the vocabulary, p2's are longer than the model's positions."""

    policy_version: int | None = 0

    def generate(
        self, requests: Sequence[PromptRequest], n: int, sampling: SamplingSettings, actor_id: str
    ) -> list[list[Sample]]:
        completions = {"p0": [5, 6, 256], "p1": [5, 70_000, 256], "p2": list(range(20))}
        return [
            [
                Sample(
                    request.prompt_id, [1, 2], completions[request.prompt_id], "x", None, "stop", 0, actor_id
                )
                for _ in range(n)
            ]
            for request in requests
        ]

    def load_weights(self, published: object) -> int:
        raise AssertionError("no weights are published in this test")


class AllGood:
    def submit(self, items: list[RewardItem]) -> "Future[list[RewardOutcome]]":
        future: Future[list[RewardOutcome]] = Future()
        future.set_result([RewardOutcome(1.0, "ok", {"exact_match": 1.0}, None) for _ in items])
        return future


def test_a_poison_group_is_dead_lettered_and_the_good_ones_are_stored(tmp_path: Path) -> None:
    buffer = MemoryBuffer(BufferConfig(on_policy_fraction=1.0))
    worker = RolloutWorker(
        engine=PoisoningEngine(),
        prompts=FilePromptSource(PROMPTS, seed=0),
        scoring=AllGood(),
        buffer=buffer,
        subscriber=FilesystemSubscriber(tmp_path / "weights"),
        dead_letters=DeadLetterFile(tmp_path / "dead_letter", "actor-0"),
        settings=RolloutSettings(
            actor_id="actor-0", n_samples=2, prompts_per_batch=3, sampling=SamplingSettings(),
            max_staleness=2, high_water=100, pause_s=0.01, limits=LIMITS,
        ),
    )  # fmt: skip
    assert worker.step() == "generated"
    worker.close()

    letters = {
        letter["prompt_id"]: letter["reason"] for letter in read_dead_letters(tmp_path / "dead_letter")
    }
    assert letters.keys() == {"p1", "p2"}
    assert "completion token id 70000 outside the vocabulary [0, 300)" in letters["p1"]
    assert "22 tokens" in letters["p2"] and "more than the model's 12 positions" in letters["p2"]
    assert worker.stats.groups_pushed == 1 and worker.stats.groups_dead_lettered == 2
    batch = buffer.sample(10, learner_version=0)  # what the learner gets
    assert [group.samples[0].prompt_id for group in batch.groups] == ["p0"]
