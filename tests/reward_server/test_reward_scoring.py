"""score_items: the weighted sum, and every way a scorer can fail becoming a failed item, never a 0."""

import asyncio
import math
from collections.abc import Sequence

import pytest
from reward_support import metric

from reward_server.scorers.base import ScoreItem, ScorerResult
from reward_server.scoring import ItemScore, WeightedScorer, score_items

ITEMS = [ScoreItem("p", "a"), ScoreItem("p", "b")]


class Fixed:
    """A scorer that returns given results (or raises, or sleeps), to drive score_items."""

    def __init__(self, name: str, results: list[ScorerResult] | Exception, sleep_s: float = 0.0) -> None:
        self.name = name
        self.results = results
        self.sleep_s = sleep_s

    async def score(self, items: Sequence[ScoreItem]) -> list[ScorerResult]:
        await asyncio.sleep(self.sleep_s)
        if isinstance(self.results, Exception):
            raise self.results
        return self.results

    async def close(self) -> None:
        return None


def run(
    *scorers: tuple[str, float, list[ScorerResult] | Exception], timeout_s: float = 5.0
) -> list[ItemScore]:
    entries = [WeightedScorer(name, weight, Fixed(name, results)) for name, weight, results in scorers]
    return asyncio.run(score_items(entries, ITEMS, timeout_s))


def ok(*scores: float) -> list[ScorerResult]:
    return [ScorerResult.ok(score) for score in scores]


def test_reward_is_the_weighted_sum_of_the_scores() -> None:
    # item 0: 2*1.0 + (-0.5)*4.0 = 0.0; item 1: 2*0.25 + (-0.5)*(-2.0) = 1.5
    results = run(("a", 2.0, ok(1.0, 0.25)), ("b", -0.5, ok(4.0, -2.0)))
    assert [r.reward for r in results] == [0.0, 1.5]
    assert [r.status for r in results] == ["ok", "ok"]
    assert results[1].scores == {"a": 0.25, "b": -2.0}
    assert results[0].error is None


def test_one_failing_scorer_fails_the_item_and_keeps_the_other_scores() -> None:
    failing = [ScorerResult.ok(1.0), ScorerResult.failed("no reference")]
    results = run(("a", 1.0, ok(1.0, 1.0)), ("b", 1.0, failing))
    assert results[0].reward == 2.0
    assert (results[1].reward, results[1].status) == (None, "error")
    assert results[1].error == "b: no reference"
    assert results[1].scores == {"a": 1.0}


def test_an_item_is_timeout_only_when_every_failure_is_a_timeout() -> None:
    timeout = [ScorerResult.failed("slow", "timeout")] * 2
    error = [ScorerResult.failed("broken")] * 2
    assert [r.status for r in run(("a", 1.0, timeout), ("b", 1.0, ok(1, 1)))] == ["timeout", "timeout"]
    mixed = run(("a", 1.0, timeout), ("b", 1.0, error))
    assert mixed[0].status == "error" and mixed[0].error == "a: slow; b: broken"


def test_a_scorer_past_the_deadline_times_out_its_items() -> None:
    before = metric("tandem_reward_scorer_timeouts_total", scorer="sleepy")
    entries = [WeightedScorer("sleepy", 1.0, Fixed("sleepy", ok(1, 1), sleep_s=5.0))]
    results = asyncio.run(score_items(entries, ITEMS, timeout_s=0.1))
    assert [r.status for r in results] == ["timeout", "timeout"]
    assert results[0].reward is None and results[0].error == "sleepy: no result within 0.1 s"
    assert metric("tandem_reward_scorer_timeouts_total", scorer="sleepy") == before + 2


def test_a_crashing_scorer_fails_its_items_with_the_exception() -> None:
    before = metric("tandem_reward_scorer_errors_total", scorer="crash")
    results = run(("crash", 1.0, RuntimeError("model exploded")))
    assert all(r.status == "error" and r.reward is None for r in results)
    assert results[0].error == "crash: scorer crashed: RuntimeError: model exploded"
    assert metric("tandem_reward_scorer_errors_total", scorer="crash") == before + 2


def test_a_wrong_number_of_results_fails_every_item() -> None:
    results = run(("short", 1.0, ok(1.0)))
    assert [r.error for r in results] == ["short: returned 1 results for 2 items"] * 2


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_scores_are_errors(bad: float) -> None:
    results = run(("a", 1.0, ok(bad, 1.0)))
    assert results[0].status == "error" and results[0].reward is None
    assert results[0].error == f"a: returned a non-finite score ({bad})"
    assert results[1].reward == 1.0


def test_an_ok_result_without_a_number_is_an_error() -> None:
    results = run(("a", 1.0, [ScorerResult(None), ScorerResult(True)]))  # type: ignore[arg-type]
    assert [r.error for r in results] == [
        "a: returned a non-number score None",
        "a: returned a non-number score True",
    ]


def test_a_weighted_sum_that_overflows_is_an_error() -> None:
    results = run(("a", 10.0, ok(1e308, 1.0)))
    assert results[0].status == "error" and "not finite" in (results[0].error or "")
    assert results[1].reward == 10.0


def test_latency_is_recorded_per_scorer_call() -> None:
    before = metric("tandem_reward_scorer_latency_seconds_count", scorer="timed")
    run(("timed", 1.0, ok(1, 1)))
    assert metric("tandem_reward_scorer_latency_seconds_count", scorer="timed") == before + 1


def test_no_items_is_no_results() -> None:
    assert asyncio.run(score_items([WeightedScorer("a", 1.0, Fixed("a", []))], [], 1.0)) == []


class Blocking(Fixed):
    """A scorer marked like exact_match (`never_yields`): no timeout is armed around it, so it must
    still be held to the contract and counted."""

    never_yields = True


def test_a_scorer_that_never_yields_is_still_checked_and_counted() -> None:
    def items_counted(status: str) -> float:
        return metric("tandem_reward_scorer_items_total", scorer="inline", status=status)

    before = {status: items_counted(status) for status in ("ok", "error")}
    three = [ScoreItem("p", "a"), ScoreItem("p", "b"), ScoreItem("p", "c")]
    entry = WeightedScorer("inline", 1.0, Blocking("inline", [*ok(1.0, math.nan), ScorerResult.failed("x")]))
    results = asyncio.run(score_items([entry], three, timeout_s=0.1))
    assert [r.status for r in results] == ["ok", "error", "error"]
    assert results[1].error == "inline: returned a non-finite score (nan)"
    assert items_counted("ok") == before["ok"] + 1 and items_counted("error") == before["error"] + 2
    short = WeightedScorer("inline", 1.0, Blocking("inline", ok(1.0)))
    assert [r.error for r in asyncio.run(score_items([short], three, 0.1))] == [
        "inline: returned 1 results for 3 items"
    ] * 3


def test_a_lone_scorer_gives_each_item_its_own_verdict_when_scores_repeat() -> None:
    # combine_one shares one ItemScore between items of the same score: order and failures must hold.
    verdicts = [*ok(1.0, 0.0, 1.0), ScorerResult.failed("no reference"), *ok(0.0, 0.5)]
    items = [ScoreItem("p", str(index)) for index in range(len(verdicts))]
    results = asyncio.run(score_items([WeightedScorer("em", 2.0, Fixed("em", verdicts))], items, 5.0))
    assert [r.reward for r in results] == [2.0, 0.0, 2.0, None, 0.0, 1.0]
    assert [r.status for r in results] == ["ok", "ok", "ok", "error", "ok", "ok"]
    expected_scores = [{"em": 1.0}, {"em": 0.0}, {"em": 1.0}, {}, {"em": 0.0}, {"em": 0.5}]
    assert [r.scores for r in results] == expected_scores
    assert results[3].error == "em: no reference"
