"""The DNS-rebinding defence (hosts.py): bound to loopback, the server answers only loopback Host names.

A page on evil.example that re-points its name at 127.0.0.1 reaches the server with
`Host: evil.example` (issue 18); bound beyond loopback the check is off and the token guards instead.
"""

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from reward_support import LOOPBACK, item, reward_config
from starlette.types import Message, Scope

from reward_server.app import create_app
from reward_server.hosts import LoopbackHostGuard, is_loopback_host

SCORE_BODY = {"items": [item("1+1=", "2", "2")]}
REFUSED = [
    "evil.example",
    "evil.example:8100",
    "127.0.0.1.evil.example",
    "localhost.evil.example:8100",
    "0.0.0.0:8100",
    "10.0.0.5",
    "[::1]evil",
    "[::1",
    "::1",
    "127.0.0.1:",
    "[::1]:",
    "127.0.0.1:80x",
    "",
]
ACCEPTED = [
    "127.0.0.1",
    "127.0.0.1:8100",
    "127.8.9.1:1",
    "localhost",
    "LOCALHOST:8100",
    "[::1]",
    "[::1]:8100",
]


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(reward_config()), base_url=LOOPBACK) as test_client:
        yield test_client


@pytest.mark.parametrize("host", REFUSED)
def test_a_loopback_server_refuses_a_host_that_is_not_loopback(client: TestClient, host: str) -> None:
    for method, path, body in [
        ("POST", "/v1/score", SCORE_BODY),
        ("POST", "/get_reward", {"query": ["2"], "labels": ["2"]}),
        ("GET", "/health", None),
        ("GET", "/docs", None),
    ]:
        response = client.request(method, path, json=body, headers={"host": host})
        assert response.status_code == 421, (path, response.text)
        detail = response.json()["detail"]
        assert f"Host header {host!r} refused" in detail and "DNS rebinding" in detail


@pytest.mark.parametrize("host", ACCEPTED)
def test_a_loopback_server_answers_loopback_names_on_any_port(client: TestClient, host: str) -> None:
    response = client.post("/v1/score", json=SCORE_BODY, headers={"host": host})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["reward"] == 1.0


def test_a_refused_request_is_not_read(client: TestClient) -> None:
    pulled: list[bool] = []

    def stream() -> Iterator[bytes]:
        pulled.append(True)
        yield b'{"items": []}'

    headers = {"host": "evil.example", "content-type": "application/json"}
    assert client.post("/v1/score", content=stream(), headers=headers).status_code == 421
    assert pulled == []


def test_beyond_loopback_the_check_is_off_and_the_token_guards() -> None:
    config = reward_config(host="0.0.0.0", auth_token="s3cret")
    with TestClient(create_app(config), base_url="http://reward.internal:8100") as remote:
        assert remote.post("/v1/score", json=SCORE_BODY).status_code == 401
        token = {"Authorization": "Bearer s3cret"}
        assert remote.post("/v1/score", json=SCORE_BODY, headers=token).status_code == 200
        assert remote.get("/health", headers={"host": "evil.example"}).status_code == 200


def guard(headers: list[tuple[bytes, bytes]]) -> tuple[list[Scope], list[Message]]:
    """Run one HTTP request with exactly `headers` (TestClient always adds a Host) through the guard:
    the scopes that reached the app behind it, and the messages sent back."""
    reached: list[Scope] = []
    sent: list[Message] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        reached.append(scope)

    async def receive() -> Message:
        raise AssertionError("the guard read the request body")

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/health", "headers": headers}
    asyncio.run(LoopbackHostGuard(app)(scope, receive, send))
    return reached, sent


@pytest.mark.parametrize(
    "headers",
    [[], [(b"host", b"127.0.0.1"), (b"host", b"evil.example")], [(b"host", b"127.0.0.1")] * 2],
    ids=["missing", "two-different", "two-same"],
)
def test_a_request_without_exactly_one_host_is_refused(headers: list[tuple[bytes, bytes]]) -> None:
    reached, sent = guard([(b"accept", b"*/*"), *headers])
    assert reached == [] and sent[0]["status"] == 421
    refused = b"Host header '127.0.0.1', " if headers else b"request without a Host header refused"
    assert refused in sent[1]["body"]


def test_one_loopback_host_passes_through() -> None:
    reached, sent = guard([(b"accept", b"*/*"), (b"host", b"localhost:8100")])
    assert len(reached) == 1 and sent == []


@pytest.mark.parametrize(
    ("host", "loopback"), [(host, False) for host in REFUSED] + [(h, True) for h in ACCEPTED]
)
def test_host_header_parsing(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
