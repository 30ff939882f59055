"""Request limits (413 for size and count, 422 naming over-long fields) and bearer-token auth."""

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from reward_support import LOOPBACK, item, reward_config

from reward_server.app import create_app
from reward_server.auth import is_loopback, require_token_for_public_bind

LIMITS = {"max_items": 3, "max_body_bytes": 2048, "max_text_chars": 20, "max_tests": 2}


@pytest.fixture(scope="module")
def client() -> TestClient:
    with TestClient(create_app(reward_config(**LIMITS)), base_url=LOOPBACK) as test_client:
        yield test_client


def test_too_many_items_is_a_413_naming_the_limit(client: TestClient) -> None:
    for path, body in [
        ("/v1/score", {"items": [item("1+1=", "2", "2")] * 4}),
        ("/get_reward", {"query": ["1+1=2"] * 4}),
    ]:
        response = client.post(path, json=body)
        assert response.status_code == 413, path
        assert response.json()["detail"] == "4 items exceed reward.max_items=3"
    assert client.post("/v1/score", json={"items": [item("1+1=", "2", "2")] * 3}).status_code == 200


def test_a_body_over_the_size_limit_is_a_413_before_it_is_parsed(client: TestClient) -> None:
    # Not even JSON: the size check comes first, so the answer is 413 rather than 422.
    response = client.post("/v1/score", content=b"x" * 2049, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["detail"] == "request body exceeds reward.max_body_bytes=2048"


def test_a_chunked_body_over_the_size_limit_is_a_413(client: TestClient) -> None:
    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(5):
            yield b"y" * 500

    response = client.post("/v1/score", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["detail"] == "request body exceeds reward.max_body_bytes=2048"


def test_a_chunked_body_under_the_limit_is_scored(client: TestClient) -> None:
    payload = b'{"items": [{"prompt": "1+1=", "completion": "2", "reference": "2"}]}'
    response = client.post(
        "/v1/score", content=iter([payload[:10], payload[10:]]), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200 and response.json()["results"][0]["reward"] == 1.0


def test_over_long_texts_are_a_422_naming_each_field(client: TestClient) -> None:
    long = "z" * 21
    items = [
        item("ok", "ok", "1"),
        item(long, "ok", long, tests=["pass", long]),
    ]
    response = client.post("/v1/score", json={"items": items})
    assert response.status_code == 422
    locations = [tuple(error["loc"]) for error in response.json()["detail"]]
    assert locations == [
        ("body", "items", 1, "prompt"),
        ("body", "items", 1, "reference"),
        ("body", "items", 1, "tests", 1),
    ]
    assert response.json()["detail"][0]["msg"] == (
        "String should have at most 20 characters (reward.max_text_chars), got 21"
    )


def test_too_many_tests_on_an_item_is_a_422(client: TestClient) -> None:
    response = client.post("/v1/score", json={"items": [item("p", "c", tests=["pass"] * 3)]})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "items", 0, "tests"]
    assert error["msg"] == "List should have at most 2 items (reward.max_tests), got 3"


def test_over_long_openrlhf_fields_are_a_422(client: TestClient) -> None:
    body = {"query": ["1+1=2", "q" * 21], "prompts": ["1+1=", "q"], "labels": ["2", "l" * 21]}
    response = client.post("/get_reward", json=body)
    assert response.status_code == 422
    locations = [tuple(error["loc"]) for error in response.json()["detail"]]
    assert locations == [("body", "query", 1), ("body", "labels", 1)]


@pytest.fixture(scope="module")
def guarded() -> TestClient:
    with TestClient(create_app(reward_config(auth_token="s3cret")), base_url=LOOPBACK) as test_client:
        yield test_client


@pytest.mark.parametrize("path", ["/v1/score", "/get_reward"])
def test_scoring_routes_need_the_bearer_token_when_one_is_set(guarded: TestClient, path: str) -> None:
    body = {"items": [item("1+1=", "2", "2")]} if path == "/v1/score" else {"query": ["2"], "labels": ["2"]}
    for headers in [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic s3cret"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
    ]:
        response = guarded.post(path, json=body, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
    response = guarded.post(path, json=body, headers={"Authorization": "Bearer s3cret"})
    assert response.status_code == 200


def large_body(path: str) -> bytes:
    """A valid 7 MiB body for `path`, within the default limits (8 MiB, 1024 items, 100k chars a text)."""
    texts = ["7" * 7000] * 1000
    body = {"items": [item("1+1=", text, "2") for text in texts]} if path == "/v1/score" else {"query": texts}
    return json.dumps(body).encode()


@pytest.mark.parametrize("path", ["/v1/score", "/get_reward"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_request_without_the_token_is_refused_before_its_body_is_read(
    guarded: TestClient, path: str, framing: str
) -> None:
    """Reading and parsing a body before the 401 would let anyone without the token make the server
    do seconds of work per request (issue 17). The body stream records whether it was pulled."""
    body = large_body(path)
    pulled: list[int] = []

    def stream() -> Iterator[bytes]:
        pulled.append(len(body))
        yield body

    headers = {"content-type": "application/json"}
    if framing == "content-length":
        headers["content-length"] = str(len(body))  # else httpx sends a stream chunked
    response = guarded.post(path, content=stream(), headers=headers)
    assert response.status_code == 401, response.text
    assert pulled == [], f"{path} read the {framing} body of a request without the token"
    # With the token the same kind of request is read and answered (not too large, not refused).
    response = guarded.post(
        path, content=iter([body[:100], body[100:]]), headers=headers | {"Authorization": "Bearer s3cret"}
    )
    assert response.status_code == 200, response.text[:300]


def test_an_empty_token_is_refused_by_the_config() -> None:
    """`--set reward.auth_token=$UNSET` gives "": it must not configure a token that "Bearer " matches."""
    with pytest.raises(ValueError, match="auth_token"):
        reward_config(host="0.0.0.0", auth_token="")


@pytest.mark.parametrize("path", ["/v1/score", "/get_reward"])
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_scoring_body_not_declared_json_is_a_415(
    client: TestClient, path: str, content_type: str | None
) -> None:
    """A web page may POST text/plain, or a Blob with no type, to a loopback server without a CORS
    preflight: no scoring for it."""
    body = b'{"items": [{"prompt": "1+1=", "completion": "2", "reference": "2"}]}'
    if path == "/get_reward":
        body = b'{"query": ["1+1=2"], "prompts": ["1+1="], "labels": ["2"]}'
    headers = {"content-type": content_type} if content_type else {}
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["detail"]
    for declared in ["application/json", "application/json; charset=utf-8", "application/vnd.tandem+json"]:
        assert client.post(path, content=body, headers={"content-type": declared}).status_code == 200


def test_probes_and_metrics_need_no_token(guarded: TestClient) -> None:
    for path in ["/health", "/ready", "/metrics"]:
        assert guarded.get(path).status_code == 200, path


def test_binding_beyond_loopback_requires_a_token() -> None:
    with pytest.raises(ValueError, match=r"binding to '0.0.0.0' .* requires reward.auth_token"):
        create_app(reward_config(host="0.0.0.0"))
    create_app(reward_config(host="0.0.0.0", auth_token="t"))  # with a token it is allowed
    require_token_for_public_bind("::1", None)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("reward.internal", False)],
)  # fmt: skip
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
