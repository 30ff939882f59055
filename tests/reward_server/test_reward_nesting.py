"""The nesting limit (reward.max_json_depth): JSON nested past it is a 422 naming the field, never a 500.

About 4 KB of nested `metadata` made msgspec raise RecursionError, an HTTP 500 (issue 17). Depths are
those of the whole body, which counts as 1: a /v1/score item's `metadata` object is at depth 4.
"""

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from reward_support import LOOPBACK, exact_match, item, python_scorer, reward_config

from reward_server import nesting
from reward_server.app import create_app
from reward_server.nesting import nested_deeper, too_deep

LIMIT = 32
RECURSION = 5000  # far past msgspec's recursion limit (~1000) and pydantic's parser's (~200)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    config = reward_config(
        exact_match(), python_scorer("metadata_weight", name="weight"), max_json_depth=LIMIT
    )
    with TestClient(create_app(config), base_url=LOOPBACK) as test_client:
        yield test_client


def nested_dicts(levels: int) -> str:
    """`levels` objects, each inside the one before: {"a": {"a": ... {"weight": 1} ...}}."""
    return '{"a": ' * (levels - 1) + '{"weight": 1}' + "}" * (levels - 1)


def nested_lists(levels: int) -> str:
    return "[" * levels + "1" + "]" * levels


def score_body(metadata: str, *, extra: str = "") -> bytes:
    """A /v1/score body whose second item carries `metadata` (JSON text); `extra` goes into that item."""
    first = json.dumps(item("1+1=", "2", "2"))
    second = '{"prompt": "1+1=", "completion": "2", "reference": "2", "metadata": ' + metadata + extra + "}"
    return f'{{"items": [{first}, {second}]}}'.encode()


def post(client: TestClient, path: str, body: bytes) -> Any:
    return client.post(path, content=body, headers={"content-type": "application/json"})


def assert_too_deep(response: Any, location: list[str | int]) -> None:
    assert response.status_code == 422, response.text[:500]
    (error,) = response.json()["detail"]
    assert error["loc"] == location
    assert error["type"] == "too_deeply_nested"
    assert error["msg"] == f"JSON nested deeper than {LIMIT} levels (reward.max_json_depth)"


# Metadata at depth 4 holding k more levels: its deepest container is at depth 4 + k.
@pytest.mark.parametrize(
    ("metadata", "ok"),
    [
        (nested_dicts(LIMIT - 3), True),  # the innermost object at depth 32: the limit itself
        (nested_dicts(LIMIT - 2), False),  # 33: through msgspec, then refused
        (nested_dicts(RECURSION), False),  # msgspec's RecursionError, a 500 before
        ('{"weight": 1, "a": ' + nested_lists(LIMIT - 4) + "}", True),
        ('{"weight": 1, "a": ' + nested_lists(LIMIT - 3) + "}", False),
        ('{"weight": 1, "a": ' + nested_lists(RECURSION) + "}", False),
    ],
    ids=[
        "dicts-at-limit",
        "dicts-past",
        "dicts-recursion",
        "lists-at-limit",
        "lists-past",
        "lists-recursion",
    ],
)
def test_metadata_nested_past_the_limit_is_a_422_naming_it(
    client: TestClient, metadata: str, ok: bool
) -> None:
    response = post(client, "/v1/score", score_body(metadata))
    if ok:
        assert response.status_code == 200, response.text[:500]
        assert [result["status"] for result in response.json()["results"]] == ["ok", "ok"]
    else:
        assert_too_deep(response, ["body", "items", 1, "metadata"])


@pytest.mark.parametrize("levels", [LIMIT - 2, RECURSION])
def test_the_slow_path_applies_the_same_limit(client: TestClient, levels: int) -> None:
    # NaN makes msgspec refuse the body, so pydantic reads it (test_reward_wire.py): the same answer.
    metadata = '{"x": NaN, "weight": 1, "a": ' + nested_dicts(levels - 1) + "}"
    assert_too_deep(post(client, "/v1/score", score_body(metadata)), ["body", "items", 1, "metadata"])
    at_limit = '{"x": NaN, "weight": 1, "a": ' + nested_dicts(LIMIT - 4) + "}"
    assert post(client, "/v1/score", score_body(at_limit)).status_code == 200


@pytest.mark.parametrize(
    ("body", "location"),
    [
        (
            f'{{"items": [{{"prompt": {nested_lists(RECURSION)}, "completion": "c"}}]}}',
            ["items", 0, "prompt"],
        ),
        (score_body("{}", extra=f', "tests": [{nested_lists(RECURSION)}]'), ["items", 1, "tests"]),
        (score_body("{}", extra=f', "extra": {nested_dicts(RECURSION)}'), ["items", 1, "extra"]),
        (f'{{"items": [], "scorers": {nested_lists(LIMIT + 1)}}}', ["scorers", 0]),
        (f'{{"items": [], "unknown": {nested_dicts(RECURSION)}}}', ["unknown", "a"]),
        (nested_lists(RECURSION).encode(), [0, 0]),
    ],
    ids=["prompt", "tests", "unknown-item-field", "scorers", "unknown-field", "body"],
)
def test_deep_json_in_any_score_field_is_a_422_naming_it(
    client: TestClient, body: str | bytes, location: list[str | int]
) -> None:
    raw = body.encode() if isinstance(body, str) else body
    assert_too_deep(post(client, "/v1/score", raw), ["body", *location])


@pytest.mark.parametrize(
    ("body", "location"),
    [
        (f'{{"query": ["1+1=2", {nested_lists(RECURSION)}]}}', ["query", 1]),
        (f'{{"query": ["2", "3"], "labels": ["2", {nested_dicts(LIMIT)}]}}', ["labels", 1]),
        (f'{{"query": ["2"], "prompts": [{nested_lists(LIMIT)}]}}', ["prompts", 0]),
        # Ignored as an extra when shallow (newer clients' fields), refused when deep.
        (f'{{"query": ["2"], "labels": ["2"], "options": {nested_dicts(RECURSION)}}}', ["options", "a"]),
    ],
    ids=["query", "labels", "prompts", "ignored-field"],
)
def test_deep_json_in_an_openrlhf_body_is_a_422_naming_it(
    client: TestClient, body: str, location: list[str | int]
) -> None:
    assert_too_deep(post(client, "/get_reward", body.encode()), ["body", *location])


def test_shallow_openrlhf_bodies_are_unaffected(client: TestClient) -> None:
    body = {"query": ["2"], "labels": ["2"], "options": json.loads(nested_dicts(LIMIT - 1))}  # to 32
    assert post(client, "/get_reward", json.dumps(body).encode()).json()["rewards"] == [1.0]


def test_the_limit_is_configurable() -> None:
    config = reward_config(python_scorer("metadata_weight"), max_json_depth=6)
    with TestClient(create_app(config), base_url=LOOPBACK) as small:
        assert post(small, "/v1/score", score_body(nested_dicts(3))).status_code == 200  # depth 6
        response = post(small, "/v1/score", score_body(nested_dicts(4)))
    assert response.status_code == 422 and response.json()["detail"][0]["msg"].endswith(
        "deeper than 6 levels (reward.max_json_depth)"
    )


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b'{"a": "[[[[[[[[", "b": ["{{{{{{{{{{"]}', None),  # brackets in strings do not nest
        (b'{"a": "\\"[[[[[[[[", "b": [[[[1]]]]}', ("b", 0, 0, 0)),  # nor after an escaped quote
        (b'{"a": 1, "k\\u00e9y": {"x": [0, 1, [[[[]]]]]}}', ("k\u00e9y", "x", 2, 0)),
        (b"[1, 2, [3, [4, [5]]]]", None),
        (b"[1, 2, [3, [4, [5, [[6]]]]]]", (2, 1, 1, 1)),
        (b'{"a": 1}' + b"]" * 40, None),  # malformed, not deep: the parser's to refuse
        (b'{"a": ' + b"[" * 40, ("a", 0, 0, 0)),  # unclosed, and deep on the way
    ],
)
def test_the_scanner_finds_the_path_to_the_first_container_past_the_limit(
    body: bytes, path: tuple[str | int, ...] | None
) -> None:
    assert too_deep(body, max_depth=4) == path


def test_the_decoded_value_check_counts_levels_without_recursing() -> None:
    assert not nested_deeper({"a": [1, {"b": 2}]}, 3)
    assert nested_deeper({"a": [1, {"b": []}]}, 3)
    value: list[Any] = []
    for _ in range(100_000):  # far past the recursion limit
        value = [value]
    assert nested_deeper(value, 50)


def test_a_too_deep_container_past_the_scanned_tokens_is_named_as_the_body(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path search stops after MAX_TOKENS tokens (a hostile body may hold millions): still a 422."""
    monkeypatch.setattr(nesting, "MAX_TOKENS", 10)
    body = '{"query": ["2"], "labels": ["2"], "x": [' + '"a", ' * 20 + nested_lists(RECURSION) + "]}"
    assert_too_deep(post(client, "/get_reward", body.encode()), ["body"])
    monkeypatch.setattr(nesting, "MAX_TOKENS", 100)
    assert_too_deep(post(client, "/get_reward", body.encode()), ["body", "x", 20])
