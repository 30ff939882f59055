"""POST /v1/score and the operational routes through FastAPI's TestClient: shape, order, subsets, 422s."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from reward_support import LOOPBACK, exact_match, item, metric, python_scorer, reward_config

from core.config.reward import UnitTestsScorerConfig
from reward_server.app import create_app

CONFIG = reward_config(
    exact_match("exact_match", weight=2.0),
    python_scorer("completion_length", name="length", weight=0.5),
    python_scorer("non_finite", name="finite", weight=0.0),
)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(CONFIG), base_url=LOOPBACK) as test_client:
        yield test_client


def test_results_come_one_per_item_in_order_with_per_scorer_scores(client: TestClient) -> None:
    items = [item("1+1=", "2", "2"), item("2+2=", "5", "4"), item("3+3=", "6 ", "6")]
    response = client.post("/v1/score", json={"items": items})
    assert response.status_code == 200, response.text
    body = response.json()
    # reward = 2 * exact_match + 0.5 * len(completion) + 0 * finite
    assert [r["reward"] for r in body["results"]] == [2.5, 0.5, 3.0]
    assert body["results"][0] == {
        "reward": 2.5,
        "status": "ok",
        "scores": {"exact_match": 1.0, "length": 1.0, "finite": 1.0},
        "error": None,
    }
    assert body["server_version"] == "0.1.0" and len(body["config_hash"]) == 16


def test_a_failed_item_is_reported_as_failed_never_as_zero(client: TestClient) -> None:
    items = [item("1+1=", "2", None), item("1+1=", "nan", "2"), item("1+1=", "2", "2")]
    results = client.post("/v1/score", json={"items": items}).json()["results"]
    assert results[0]["reward"] is None and results[0]["status"] == "error"
    assert results[0]["error"] == "exact_match: the item has no reference to compare with"
    # A NaN from a scorer with weight 0 still fails the item: it is an error, not a number to weigh.
    assert results[1]["reward"] is None
    assert results[1]["error"] == "finite: returned a non-finite score (nan)"
    assert results[1]["scores"] == {"exact_match": 0.0, "length": 3.0}
    assert results[2]["status"] == "ok"


def test_a_request_may_pick_a_subset_of_scorers(client: TestClient) -> None:
    body = {"items": [item("p", "abcd", None)], "scorers": ["length"]}
    result = client.post("/v1/score", json=body).json()["results"][0]
    assert (result["reward"], result["scores"]) == (2.0, {"length": 4.0})


def test_unknown_scorers_are_a_422_that_names_them(client: TestClient) -> None:
    body = {"items": [item("p", "c")], "scorers": ["length", "bleu"]}
    response = client.post("/v1/score", json=body)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "scorers", 1]
    assert error["msg"] == "unknown scorer 'bleu'; configured: ['exact_match', 'length', 'finite']"


def test_an_empty_scorer_list_is_a_422_not_a_reward_of_zero(client: TestClient) -> None:
    response = client.post("/v1/score", json={"items": [item("p", "c")], "scorers": []})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "scorers"]


@pytest.mark.parametrize(
    ("body", "location", "kind"),
    [
        ({"items": [item("p", "c"), {"prompt": "p"}]}, ["body", "items", 1, "completion"], "missing"),
        (
            {"items": [item("p", "c", refrence="r")]},
            ["body", "items", 0, "refrence"],
            "unexpected_keyword_argument",
        ),
        ({"items": [item("p", 3)]}, ["body", "items", 0, "completion"], "string_type"),
        ({"items": [item("p", "c", tests="assert True")]}, ["body", "items", 0, "tests"], "list_type"),
        ({"items": "none"}, ["body", "items"], "list_type"),
        ({"item": []}, ["body", "items"], "missing"),
    ],
)
def test_malformed_requests_are_a_422_naming_the_field(
    client: TestClient, body: dict, location: list, kind: str
) -> None:
    response = client.post("/v1/score", json=body)
    assert response.status_code == 422
    assert {"loc": location, "type": kind} in [
        {"loc": error["loc"], "type": error["type"]} for error in response.json()["detail"]
    ]


@pytest.mark.parametrize("path", ["/v1/score", "/get_reward"])
def test_a_body_that_is_not_json_is_a_422_that_does_not_echo_it(client: TestClient, path: str) -> None:
    body = b'{"items": [' if path == "/v1/score" else b'{"query": ["' + b"q" * 10_000
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["type"] == "json_invalid" and error["loc"] == ["body"] and "input" not in error


def test_item_metadata_reaches_the_scorers() -> None:
    with TestClient(create_app(reward_config(python_scorer("metadata_weight"))), base_url=LOOPBACK) as client:
        body = {"items": [item("p", "c", metadata={"weight": 3})]}
        assert client.post("/v1/score", json=body).json()["results"][0]["reward"] == 3.0


def test_health_ready_docs_and_openapi(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True and ready.json()["scorers"] == ["exact_match", "length", "finite"]
    assert client.get("/docs").status_code == 200 and "swagger" in client.get("/docs").text.lower()
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/score", "/get_reward", "/health", "/ready", "/metrics"} <= set(paths)


def test_metrics_count_items_errors_and_latency_per_scorer(client: TestClient) -> None:
    labels = {"scorer": "finite"}
    errors = metric("tandem_reward_scorer_errors_total", **labels)
    calls = metric("tandem_reward_scorer_latency_seconds_count", **labels)
    ok_items = metric("tandem_reward_scorer_items_total", status="ok", **labels)
    items = [item("p", "inf", "1"), item("p", "-inf", "1"), item("p", "1", "1")]
    client.post("/v1/score", json={"items": items})
    assert metric("tandem_reward_scorer_errors_total", **labels) == errors + 2
    assert metric("tandem_reward_scorer_items_total", status="ok", **labels) == ok_items + 1
    assert metric("tandem_reward_scorer_latency_seconds_count", **labels) == calls + 1
    text = client.get("/metrics").text
    assert 'tandem_reward_scorer_latency_seconds_bucket{le="0.001",scorer="finite"}' in text
    assert 'tandem_reward_scorer_timeouts_total{scorer="length"}' in text  # present from start-up, at 0


def test_the_config_hash_identifies_the_scoring_setup_but_not_the_token() -> None:
    def config_hash(*scorers: object, **fields: object) -> str:
        with TestClient(create_app(reward_config(*scorers, **fields)), base_url=LOOPBACK) as client:
            return client.get("/ready").json()["config_hash"]

    base = config_hash()
    assert config_hash(auth_token="one") == config_hash(auth_token="two") != base
    assert config_hash(exact_match(weight=3.0)) != base


def test_a_scorer_that_cannot_start_stops_the_server_with_its_name() -> None:
    app = create_app(reward_config(exact_match(), python_scorer("missing", name="custom")))
    with (
        pytest.raises(
            RuntimeError, match=r"reward scorer 'custom' \(type python\) failed to start: .*missing"
        ),
        TestClient(app, base_url=LOOPBACK),
    ):
        pass


def test_sandbox_kills_are_counted_per_scorer() -> None:
    # `sandbox: none` runs this (trusted) sleeper directly; the kill is the same event as under bwrap.
    config = reward_config(UnitTestsScorerConfig(name="tests", sandbox="none", timeout_s=0.5))
    before = metric("tandem_reward_sandbox_kills_total", scorer="tests", reason="timeout")
    with TestClient(create_app(config), base_url=LOOPBACK) as client:
        body = {"items": [item("", "import time\ntime.sleep(30)\n", tests=["pass"])]}
        result = client.post("/v1/score", json=body).json()["results"][0]
    assert (result["reward"], result["status"]) == (0.0, "ok")  # a killed test did not pass
    assert metric("tandem_reward_sandbox_kills_total", scorer="tests", reason="timeout") == before + 1
