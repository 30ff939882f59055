"""`reward_model`: a sequence-classification reward model with one logit; reward = that logit.

Input text = prompt + completion, as in training (core/tinymodels/reward_model.py). Inputs over
`max_length` tokens lose their start rather than their end: the completion, which is being judged,
comes last.
"""

from collections.abc import Sequence

from core.config.reward import RewardModelScorerConfig
from reward_server.scorers.base import ScoreItem, ScorerResult
from reward_server.scorers.hf_classifier import SequenceClassifier


class RewardModelScorer:
    def __init__(self, config: RewardModelScorerConfig) -> None:
        self.name = config.name
        self.classifier = SequenceClassifier(
            config.path, config.batch_size, config.max_length, truncation_side="left"
        )
        if self.classifier.num_labels != 1:
            raise ValueError(
                f"{config.path}: a reward model needs exactly one output (num_labels=1), "
                f"this one has {self.classifier.num_labels}"
            )

    async def score(self, items: Sequence[ScoreItem]) -> list[ScorerResult]:
        logits = await self.classifier.logits([item.prompt + item.completion for item in items])
        # Non-finite logits are passed on as they are; the server reports them as errors.
        return [ScorerResult.ok(float(value)) for value in logits[:, 0].tolist()]

    async def close(self) -> None:
        self.classifier.close()
