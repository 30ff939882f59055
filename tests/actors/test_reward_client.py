"""The actors' reward client over real HTTP: against the real reward server, and against small servers
that fail in the ways production servers do (5xx, 429, slow, wrong counts, refused connections)."""

import asyncio
import time
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from actors.reward_client import RewardClient, RewardItem, RewardOutcome
from core.config.reward import RewardConfig
from services.embedded_server import free_port, serve


def arithmetic_items() -> list[RewardItem]:
    return [
        RewardItem("12+30=", "42", reference="42"),
        RewardItem("12+30=", "41", reference="42"),
        RewardItem("1+1=", " 2 and more", reference="2"),
    ]


def score(url: str, items: list[RewardItem], **options: object) -> tuple[list[RewardOutcome], RewardClient]:
    async def call() -> tuple[list[RewardOutcome], RewardClient]:
        client = RewardClient(url, backoff_s=0.01, **options)  # type: ignore[arg-type]
        try:
            return await client.score(items), client
        finally:
            await client.aclose()

    return asyncio.run(call())


@pytest.fixture(scope="module")
def reward_server() -> Iterator[str]:
    from reward_server.app import create_app

    with serve(create_app(RewardConfig())) as url:
        yield url


def test_scores_through_the_real_reward_server(reward_server: str) -> None:
    outcomes, client = score(reward_server, arithmetic_items())
    assert [o.reward for o in outcomes] == [1.0, 0.0, 1.0]
    assert all(o.status == "ok" and o.error is None for o in outcomes)
    assert outcomes[0].scores == {"exact_match": 1.0}
    assert client.stats.requests == 1 and client.stats.items_ok == 3


def test_batches_keep_item_order(reward_server: str) -> None:
    items = [RewardItem(f"{i}+0=", str(i), reference=str(i if i % 2 else i + 1)) for i in range(10)]
    outcomes, client = score(reward_server, items, batch_size=3, max_concurrency=2)
    assert [o.reward for o in outcomes] == [float(i % 2) for i in range(10)]
    assert client.stats.requests == 4


def test_a_per_item_failure_stays_a_failure(reward_server: str) -> None:
    # exact_match cannot score an item without a reference: that item fails, the others do not.
    items = [RewardItem("1+1=", "2", reference="2"), RewardItem("1+1=", "2")]
    outcomes, _ = score(reward_server, items)
    assert outcomes[0].reward == 1.0
    assert outcomes[1].reward is None and outcomes[1].status == "error"
    assert "reference" in (outcomes[1].error or "")


def flaky_app(failures: int, status_code: int) -> tuple[FastAPI, list[int]]:
    """Answers `status_code` to the first `failures` requests, then scores every item 0.5."""
    app, calls = FastAPI(), []

    @app.post("/v1/score")
    async def score_route(request: Request) -> JSONResponse:
        body = await request.json()
        calls.append(len(body["items"]))
        if len(calls) <= failures:
            return JSONResponse({"detail": "overloaded"}, status_code=status_code)
        result = {"reward": 0.5, "status": "ok", "scores": {"x": 0.5}, "error": None}
        results = [result for _ in body["items"]]
        return JSONResponse({"results": results, "server_version": "t", "config_hash": "t"})

    return app, calls


@pytest.mark.parametrize("status_code", [503, 429, 500])
def test_transient_server_errors_are_retried_with_backoff(status_code: int) -> None:
    app, calls = flaky_app(failures=2, status_code=status_code)
    with serve(app) as url:
        outcomes, client = score(url, arithmetic_items(), retries=3)
    assert [o.reward for o in outcomes] == [0.5, 0.5, 0.5]
    assert len(calls) == 3 and client.stats.retries == 2


def test_retries_exhausted_fail_every_item_with_the_reason() -> None:
    app, calls = flaky_app(failures=100, status_code=503)
    with serve(app) as url:
        outcomes, client = score(url, arithmetic_items(), retries=2)
    assert len(calls) == 3
    for outcome in outcomes:
        assert outcome.reward is None and outcome.status == "error"
        assert "HTTP 503" in (outcome.error or "") and "after 3 attempts" in (outcome.error or "")
    assert client.stats.items_failed == 3 and client.stats.failed_requests == 1


def test_a_client_error_is_not_retried() -> None:
    app, calls = flaky_app(failures=100, status_code=422)
    with serve(app) as url:
        outcomes, _ = score(url, arithmetic_items(), retries=3)
    assert len(calls) == 1
    assert all(o.status == "error" and "HTTP 422" in (o.error or "") for o in outcomes)


def test_an_unreachable_server_is_an_error_not_a_zero() -> None:
    outcomes, client = score(f"http://127.0.0.1:{free_port()}", arithmetic_items(), retries=1)
    assert all(o.reward is None and o.status == "error" for o in outcomes)
    assert "unreachable" in (outcomes[0].error or "")
    assert client.stats.retries == 1


def test_the_deadline_bounds_a_slow_server() -> None:
    app = FastAPI()

    @app.post("/v1/score")
    async def slow(request: Request) -> JSONResponse:
        await asyncio.sleep(5)
        return JSONResponse({})

    with serve(app) as url:
        started = time.monotonic()
        outcomes, _ = score(url, arithmetic_items(), timeout_s=0.5, retries=3)
        elapsed = time.monotonic() - started
    assert elapsed < 3
    assert all(o.reward is None and o.status == "timeout" for o in outcomes)


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ([{"reward": 1.0, "status": "ok", "scores": {}, "error": None}], "returned 1 results for 3 items"),
        ([{"reward": None, "status": "ok", "scores": {}, "error": None}] * 3, "said ok with reward None"),
        ([{"reward": 1.0, "status": "maybe"}] * 3, "malformed result"),
    ],
)
def test_answers_that_break_the_contract_fail_the_items(results: list[dict], message: str) -> None:
    app = FastAPI()

    @app.post("/v1/score")
    async def wrong(request: Request) -> JSONResponse:
        return JSONResponse({"results": results, "server_version": "t", "config_hash": "t"})

    with serve(app) as url:
        outcomes, _ = score(url, arithmetic_items())
    assert all(o.reward is None and o.status == "error" and message in (o.error or "") for o in outcomes)


def test_the_bearer_token_is_sent() -> None:
    app, seen = FastAPI(), []

    @app.post("/v1/score")
    async def check(request: Request) -> JSONResponse:
        seen.append(request.headers.get("authorization"))
        body = await request.json()
        results = [{"reward": 1.0, "status": "ok", "scores": {}, "error": None} for _ in body["items"]]
        return JSONResponse({"results": results, "server_version": "t", "config_hash": "t"})

    with serve(app) as url:
        score(url, arithmetic_items()[:1], token="s3cret")
    assert seen == ["Bearer s3cret"]
