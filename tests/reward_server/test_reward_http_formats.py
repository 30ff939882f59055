"""The `http` scorer's wire formats: request bodies and the checks on what an endpoint answers."""

import pytest

from reward_server.scorers.base import ScoreItem, ScorerResult
from reward_server.scorers.http_formats import (
    ResponseFormatError,
    openrlhf_body,
    openrlhf_results,
    tandem_body,
    tandem_results,
    template_body,
    value_at,
)

ITEMS = [ScoreItem("1+1=", "2", "2", ["assert True"], {"k": 1}), ScoreItem("p", "c")]


def test_bodies_carry_every_field_of_the_items() -> None:
    assert tandem_body(ITEMS)["items"][0] == {
        "prompt": "1+1=",
        "completion": "2",
        "reference": "2",
        "tests": ["assert True"],
        "metadata": {"k": 1},
    }
    assert openrlhf_body(ITEMS) == {"query": ["1+1=2", "pc"], "prompts": ["1+1=", "p"], "labels": ["2", None]}


def test_tandem_results_keep_each_items_status() -> None:
    answer = {
        "results": [
            {"reward": 0.5, "status": "ok"},
            {"reward": None, "status": "timeout", "error": "slow scorer"},
        ]
    }
    assert tandem_results(answer, 2) == [
        ScorerResult.ok(0.5),
        ScorerResult.failed("remote timeout: slow scorer", "timeout"),
    ]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"results": [{"reward": 1.0, "status": "ok"}]}, "response has 1 results for 2 items"),
        ({"rewards": [1.0, 1.0]}, "response has no 'results' list"),
        ([1.0, 1.0], "response has no 'results' list"),
        ({"results": [{"reward": 1.0, "status": "fine"}, 1]}, "a result has status 'fine'"),
        ({"results": [{"reward": 1.0, "status": "ok"}, 1]}, "a result is int, not an object"),
    ],
)
def test_tandem_answers_in_another_shape_are_format_errors(answer: object, message: str) -> None:
    with pytest.raises(ResponseFormatError, match=message):
        tandem_results(answer, 2)


def test_openrlhf_results_turn_null_into_a_failure_with_the_remote_reason() -> None:
    answer = {"rewards": [1.5, None, "high", float("nan")], "errors": [None, "no label"]}
    results = openrlhf_results(answer, 4)
    assert results[0] == ScorerResult.ok(1.5)
    assert results[1] == ScorerResult.failed("remote error: no label")
    assert results[2] == ScorerResult.failed("remote rewards is 'high', not a number")
    assert results[3] == ScorerResult.failed("remote rewards is not finite (nan)")


def test_template_placeholders_are_filled_once_in_every_string() -> None:
    template = {"input": ["{prompt}{completion}", {"ref": "{reference}"}], "n": 3, "other": "{unknown}"}
    item = ScoreItem("a{reference}", "b", None)
    assert template_body(template, item) == {
        "input": ["a{reference}b", {"ref": ""}],
        "n": 3,
        "other": "{unknown}",
    }


def test_value_at_follows_keys_and_list_indices() -> None:
    body = {"data": [{"score": 1}, {"score": 2}]}
    assert (value_at(body, "data.1.score"), value_at(body, "data.-1.score")) == (2, 2)
    with pytest.raises(ResponseFormatError, match=r"response has nothing at 'data\.x' \(stopped at 'x'\)"):
        value_at(body, "data.x")
