"""POST /get_reward, the OpenRLHF remote reward format: {query, prompts, labels} -> {rewards, scores, ...}."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from reward_support import LOOPBACK, exact_match, python_scorer, reward_config

from reward_server.app import create_app


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    config = reward_config(
        exact_match(weight=1.0), python_scorer("completion_length", name="length", weight=0.1)
    )
    with TestClient(create_app(config), base_url=LOOPBACK) as test_client:
        yield test_client


def test_rewards_scores_and_extra_logs_in_openrlhf_shape(client: TestClient) -> None:
    body = {"query": ["1+1=2", "2+2=5"], "prompts": ["1+1=", "2+2="], "labels": ["2", "4"]}
    response = client.post("/get_reward", json=body)
    assert response.status_code == 200, response.text
    reply = response.json()
    # The completion is the query minus its prompt: "2" (1 char) and "5" -> 1.0 + 0.1 and 0.0 + 0.1
    assert reply["rewards"] == pytest.approx([1.1, 0.1])
    assert reply["scores"] == reply["rewards"]
    assert reply["extra_logs"] == {
        "exact_match": [1.0, 0.0],
        "length": [1.0, 1.0],
        "reward_failed": [0.0, 0.0],
    }
    assert reply["statuses"] == ["ok", "ok"] and reply["errors"] == [None, None]


def test_numeric_labels_are_references(client: TestClient) -> None:
    body = {"query": ["7+5=12"], "prompts": ["7+5="], "labels": [12]}
    assert client.post("/get_reward", json=body).json()["extra_logs"]["exact_match"] == [1.0]


def test_failed_items_are_null_with_a_reason_never_zero(client: TestClient) -> None:
    body = {
        "query": ["1+1=2", "other text 3", "3+3=6"],
        "prompts": ["1+1=", "3+3=", "3+3="],
        "labels": [None, "6", "6"],
    }
    reply = client.post("/get_reward", json=body).json()
    assert reply["rewards"][:2] == [None, None] and reply["scores"][:2] == [None, None]
    assert reply["rewards"][2] == pytest.approx(1.1)
    assert reply["statuses"] == ["error", "error", "ok"]
    assert reply["errors"][0] == "exact_match: the item has no reference to compare with"
    assert reply["errors"][1] == "query does not start with its prompt; cannot split the response off"
    assert reply["extra_logs"]["reward_failed"] == [1.0, 1.0, 0.0]
    assert reply["extra_logs"]["length"] == [1.0, None, 1.0]


def test_without_prompts_the_whole_query_is_the_completion(client: TestClient) -> None:
    reply = client.post("/get_reward", json={"query": ["12", "1+1=2"], "labels": ["12", "2"]}).json()
    assert reply["extra_logs"]["exact_match"] == [1.0, 0.0]  # "1+1=2" starts with the number 1
    assert reply["extra_logs"]["length"] == [2.0, 5.0]


def test_unknown_fields_from_newer_clients_are_ignored(client: TestClient) -> None:
    body = {"query": ["2"], "labels": ["2"], "temperature": 1.0}
    assert client.post("/get_reward", json=body).json()["statuses"] == ["ok"]


@pytest.mark.parametrize("field", ["prompts", "labels"])
def test_lists_that_do_not_match_query_are_a_422(client: TestClient, field: str) -> None:
    response = client.post("/get_reward", json={"query": ["1+1=2", "2+2=4"], field: ["x"]})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", field]
    assert error["msg"] == f"{field} has 1 entries but query has 2"


def test_a_missing_query_is_a_422(client: TestClient) -> None:
    response = client.post("/get_reward", json={"prompts": ["p"]})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "query"]


def test_an_empty_batch_is_an_empty_answer(client: TestClient) -> None:
    reply = client.post("/get_reward", json={"query": []}).json()
    assert reply["rewards"] == [] and reply["extra_logs"]["reward_failed"] == []
