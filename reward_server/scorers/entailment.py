"""`entailment`: an NLI model's probability that the reference (premise) entails the completion.

The entailment class is found through the model's `id2label` (case-insensitively), because label
order differs between NLI models; a model without that label fails the server start. An item
without a reference is that item's error: there is no premise.
"""

from collections.abc import Sequence

from core.config.reward import EntailmentScorerConfig
from reward_server.scorers.base import ScoreItem, ScorerResult
from reward_server.scorers.hf_classifier import SequenceClassifier


class EntailmentScorer:
    def __init__(self, config: EntailmentScorerConfig) -> None:
        self.name = config.name
        self.classifier = SequenceClassifier(config.path, config.batch_size, config.max_length)
        self.label_index = find_label(self.classifier.id2label, config.entailment_label, config.path)

    async def score(self, items: Sequence[ScoreItem]) -> list[ScorerResult]:
        with_premise = [index for index, item in enumerate(items) if item.reference is not None]
        results = [ScorerResult.failed("the item has no reference (the premise)")] * len(items)
        if not with_premise:
            return results
        logits = await self.classifier.logits(
            [items[index].reference or "" for index in with_premise],
            [items[index].completion for index in with_premise],
        )
        probabilities = logits.softmax(dim=-1)[:, self.label_index].tolist()
        for index, probability in zip(with_premise, probabilities, strict=True):
            results[index] = ScorerResult.ok(float(probability))
        return results

    async def close(self) -> None:
        self.classifier.close()


def find_label(id2label: dict[int, str], wanted: str, path: object) -> int:
    matches = [index for index, label in id2label.items() if label.lower() == wanted.lower()]
    if not matches:
        raise ValueError(
            f"{path}: no label {wanted!r} in the model's id2label {id2label}; "
            "set entailment_label to the model's name for the entailment class"
        )
    return int(matches[0])
