"""`exact_match`: extract the answer from the completion with a regex and compare it with `reference`.

No match is a wrong answer (score 0.0), but an item without a reference, or a numeric comparison
against a reference that is not a number, is an error: there is nothing to compare with.
"""

import re
from collections.abc import Sequence
from math import isfinite

from core.config.reward import ExactMatchScorerConfig
from reward_server.scorers.base import ScoreItem, ScorerResult

RIGHT, WRONG = ScorerResult(1.0), ScorerResult(0.0)  # frozen: one instance serves every item


class ExactMatchScorer:
    """1.0 when the extracted answer equals the reference (as strings, or as numbers within a tolerance)."""

    # `score` never awaits, so a timeout could not interrupt it: the server skips arming one.
    never_yields = True

    def __init__(self, config: ExactMatchScorerConfig) -> None:
        self.name = config.name
        self.pattern = re.compile(config.pattern)
        self.group = 1 if self.pattern.groups else 0
        self.tolerance = config.numeric_tolerance

    async def score(self, items: Sequence[ScoreItem]) -> list[ScorerResult]:
        # Pure CPU and about a microsecond per item: on the loop is cheaper than a thread hop. One loop
        # with its lookups bound once: per-item calls were a quarter of the cost (reward_bench.py).
        search, group, tolerance = self.pattern.search, self.group, self.tolerance
        results: list[ScorerResult] = []
        for item in items:
            reference = item.reference
            if reference is None:
                results.append(ScorerResult.failed("the item has no reference to compare with"))
                continue
            # The first group of the first match (the whole match when the pattern has no group);
            # no match is a wrong answer.
            match = search(item.completion)
            answer = None if match is None else match.group(group)
            same_text = answer is not None and answer.strip() == reference.strip()
            if tolerance is None:
                correct = same_text
            else:
                expected = parse_number(reference)
                if expected is None:
                    results.append(ScorerResult.failed(f"reference {reference!r} is not a number"))
                    continue
                # The reference's own text is its number: no second parse for a right answer.
                value = None if answer is None or same_text else parse_number(answer)
                correct = same_text or (value is not None and abs(value - expected) <= tolerance)
            results.append(RIGHT if correct else WRONG)
        return results

    async def close(self) -> None:
        return None


def parse_number(text: str) -> float | None:
    """A finite float from text such as "42", "-3.5", "1e3" or "1,000"; None when it is not one."""
    try:
        value = float(text)  # accepts surrounding whitespace
    except ValueError:
        try:
            value = float(text.replace(",", ""))
        except ValueError:
            return None
    return value if isfinite(value) else None
