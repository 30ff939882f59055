"""The `exact_match` and `python` scorers on their own (no server)."""

import asyncio

import pytest
import reward_functions
from reward_support import python_scorer

from core.config.reward import ExactMatchScorerConfig, PythonScorerConfig
from reward_server.scorers.base import ScoreItem, ScorerResult
from reward_server.scorers.exact_match import ExactMatchScorer, parse_number
from reward_server.scorers.python_fn import PythonScorer


def exact(pattern: str = r"^\s*(\S+)", tolerance: float | None = None) -> ExactMatchScorer:
    return ExactMatchScorer(ExactMatchScorerConfig(name="em", pattern=pattern, numeric_tolerance=tolerance))


def scores(scorer: ExactMatchScorer | PythonScorer, *items: ScoreItem) -> list[ScorerResult]:
    return asyncio.run(scorer.score(items))


def test_exact_match_compares_the_first_group_with_the_reference() -> None:
    results = scores(
        exact(),
        ScoreItem("1+1=", " 2 apples", "2"),
        ScoreItem("1+1=", "3", "2"),
        ScoreItem("1+1=", "   ", "2"),  # nothing to extract: a wrong answer, not an error
        ScoreItem("1+1=", "2.0", "2"),  # strings: "2.0" is not "2"
    )
    assert [r.score for r in results] == [1.0, 0.0, 0.0, 0.0]
    assert {r.status for r in results} == {"ok"}


def test_exact_match_uses_the_whole_match_when_the_pattern_has_no_group() -> None:
    results = scores(exact(r"\d+"), ScoreItem("", "the answer is 42.", "42"), ScoreItem("", "4 2", "42"))
    assert [r.score for r in results] == [1.0, 0.0]


def test_exact_match_with_a_tolerance_compares_numbers() -> None:
    scorer = exact(r"answer: (\S+)", tolerance=0.05)
    results = scores(
        scorer,
        ScoreItem("", "answer: 41.96", "42"),
        ScoreItem("", "answer: 41.9", "42"),
        ScoreItem("", "answer: 1,000", "1e3"),
        ScoreItem("", "answer: many", "42"),  # not a number: wrong, not an error
    )
    assert [r.score for r in results] == [1.0, 0.0, 1.0, 0.0]


def test_exact_match_cannot_judge_without_a_usable_reference() -> None:
    missing, not_number = scores(
        exact(tolerance=0.0), ScoreItem("", "42", None), ScoreItem("", "42", "forty-two")
    )
    assert (missing.status, missing.score, missing.error) == (
        "error",
        None,
        "the item has no reference to compare with",
    )
    assert not_number.status == "error" and not_number.error == "reference 'forty-two' is not a number"


def test_parse_number_accepts_only_finite_numbers() -> None:
    assert [parse_number(t) for t in ["-3.5", " 1e3 ", "1,000", "nan", "inf", "x"]] == [
        -3.5,
        1000.0,
        1000.0,
        None,
        None,
        None,
    ]


def test_exact_match_config_rejects_a_broken_regex() -> None:
    with pytest.raises(ValueError, match=r"pattern\n.*not a valid regular expression"):
        ExactMatchScorerConfig(name="em", pattern="(unclosed")


def test_python_scorer_calls_the_function_per_item_off_the_event_loop() -> None:
    reward_functions.CALLER_THREADS.clear()
    results = scores(
        PythonScorer(python_scorer("completion_length")), ScoreItem("p", "abc"), ScoreItem("p", "")
    )
    assert [r.score for r in results] == [3.0, 0.0]
    assert reward_functions.CALLER_THREADS and "MainThread" not in reward_functions.CALLER_THREADS


def test_python_scorer_turns_an_exception_into_that_items_error() -> None:
    results = scores(
        PythonScorer(python_scorer("fails_on_boom")), ScoreItem("p", "fine"), ScoreItem("p", "boom")
    )
    assert results[0] == ScorerResult.ok(1.0)
    assert results[1].status == "error" and results[1].error == "ValueError: cannot score 'boom'"


def test_python_scorer_rejects_values_that_are_not_numbers() -> None:
    as_dict, as_bool = scores(
        PythonScorer(python_scorer("not_a_number")), ScoreItem("p", "dict"), ScoreItem("p", "bool")
    )
    assert as_dict.error == "returned dict {'score': 1}, not a number"
    assert as_bool.error == "returned bool True, not a number"


def test_python_scorer_accepts_numpy_scalars() -> None:
    assert scores(PythonScorer(python_scorer("numpy_score")), ScoreItem("p", "x")) == [ScorerResult.ok(0.5)]


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("reward_functions:missing", "reward_functions has no function 'missing'"),
        ("reward_functions:NOT_CALLABLE", "reward_functions has no function 'NOT_CALLABLE'"),
    ],
)
def test_python_scorer_fails_at_start_when_the_function_cannot_be_found(function: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PythonScorer(PythonScorerConfig(name="python", function=function))


def test_python_scorer_config_requires_module_colon_function() -> None:
    with pytest.raises(ValueError, match="function"):
        PythonScorerConfig(name="python", function="reward_functions.completion_length")
