"""The `http` scorer over real HTTP, against a second reward server and a scripted external endpoint.

The scripted endpoint fails the way real ones do (5xx, 4xx, slow, not JSON) and counts calls and
requests in flight, so retries, backoff, the concurrency limit and the circuit breaker are observable.
"""

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.testclient import TestClient
from reward_support import LOOPBACK, exact_match, python_scorer, reward_config

from core.config.reward import HttpScorerConfig
from reward_server.app import create_app
from reward_server.scorers.base import ScoreItem, ScorerResult
from reward_server.scorers.http import HttpScorer
from services.embedded_server import free_port, serve


class Script:
    """State of the scripted endpoint: calls per route, requests in flight, and how many to fail."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.fail_first = 0


def scripted_app(script: Script) -> FastAPI:
    app = FastAPI()

    @app.post("/score/{mode}")
    async def score(mode: str, request: Request) -> Any:
        script.calls[mode] += 1
        body = await request.json()
        if mode == "flaky" and script.calls[mode] <= script.fail_first:
            return JSONResponse({"detail": "warming up"}, status_code=503)
        if mode == "limited" and script.calls[mode] <= script.fail_first:
            return JSONResponse({"detail": "slow down"}, status_code=429)
        if mode == "down":
            return JSONResponse({"detail": "down"}, status_code=500)
        if mode == "refuse":
            return JSONResponse({"detail": "bad request"}, status_code=400)
        if mode == "text":
            return PlainTextResponse("reward: 1")
        if mode == "slow":
            await asyncio.sleep(1.0)
        if mode == "busy":
            script.in_flight += 1
            script.max_in_flight = max(script.max_in_flight, script.in_flight)
            await asyncio.sleep(0.1)
            script.in_flight -= 1
        # A template-format answer: the reward sits at data.0.score.
        return {"data": [{"score": len(body["text"]), "echo": body}]}

    return app


@pytest.fixture(scope="module")
def script() -> Script:
    return Script()


@pytest.fixture(scope="module")
def endpoint(script: Script) -> Iterator[str]:
    with serve(scripted_app(script)) as url:
        yield url


@pytest.fixture(scope="module")
def remote_reward_server() -> Iterator[str]:
    """A second, real Tandem reward server (exact_match), as another team would run it."""
    with serve(create_app(reward_config(exact_match()))) as url:
        yield url


def http_config(url: str, **options: Any) -> HttpScorerConfig:
    return HttpScorerConfig(name="remote", url=url, **{"backoff_s": 0.01, **options})


def template_config(url: str, **options: Any) -> HttpScorerConfig:
    template = {"text": "{prompt}|{completion}", "meta": ["{reference}", 7]}
    return http_config(
        url, format="template", request_template=template, response_path="data.0.score", **options
    )


def score(config: HttpScorerConfig, items: list[ScoreItem]) -> list[ScorerResult]:
    async def run() -> list[ScorerResult]:
        scorer = HttpScorer(config)
        try:
            return await scorer.score(items)
        finally:
            await scorer.close()

    return asyncio.run(run())


ARITHMETIC = [ScoreItem("1+1=", "2", "2"), ScoreItem("1+1=", "3", "2"), ScoreItem("1+1=", "2", None)]


def test_tandem_format_against_another_reward_server(remote_reward_server: str) -> None:
    results = score(http_config(f"{remote_reward_server}/v1/score", batch_size=2), ARITHMETIC)
    assert [r.score for r in results[:2]] == [1.0, 0.0]
    # The remote server's per-item failure stays that item's failure.
    assert results[2].status == "error"
    assert results[2].error == "remote error: exact_match: the item has no reference to compare with"


def test_openrlhf_format_against_another_reward_server(remote_reward_server: str) -> None:
    results = score(http_config(f"{remote_reward_server}/get_reward", format="openrlhf"), ARITHMETIC)
    assert [r.score for r in results[:2]] == [1.0, 0.0]
    assert results[2].error == "remote error: exact_match: the item has no reference to compare with"


def test_template_format_fills_placeholders_and_reads_the_json_path(endpoint: str) -> None:
    items = [ScoreItem("ab", "cde", "r"), ScoreItem("{completion}", "x", None)]
    results = score(template_config(f"{endpoint}/score/echo"), items)
    # text = "ab|cde" (6 chars); a prompt containing a placeholder is sent as written: "{completion}|x"
    assert [r.score for r in results] == [6.0, 14.0]


def test_a_missing_json_path_is_an_error_naming_it(endpoint: str) -> None:
    config = template_config(f"{endpoint}/score/echo").model_copy(update={"response_path": "data.3.score"})
    (result,) = score(config, [ScoreItem("p", "c")])
    assert result.status == "error"
    reason = "response has nothing at 'data.3.score' (stopped at '3')"
    assert result.error == f"unexpected response from {endpoint}/score/echo: {reason}"


@pytest.mark.parametrize("mode", ["flaky", "limited"])  # HTTP 503, HTTP 429
def test_server_errors_and_rate_limits_are_retried_until_success(
    endpoint: str, script: Script, mode: str
) -> None:
    script.fail_first, script.calls[mode] = 2, 0
    (result,) = score(template_config(f"{endpoint}/score/{mode}", retries=2), [ScoreItem("p", "c")])
    assert result == ScorerResult.ok(3.0)
    assert script.calls[mode] == 3


def test_exhausted_retries_are_reported_with_the_attempt_count(endpoint: str, script: Script) -> None:
    script.fail_first, script.calls["flaky"] = 5, 0
    started = time.perf_counter()
    (result,) = score(
        template_config(f"{endpoint}/score/flaky", retries=2, backoff_s=0.1), [ScoreItem("p", "c")]
    )
    assert result.status == "error"
    assert result.error == f"{endpoint}/score/flaky answered HTTP 503 (gave up after 3 attempts)"
    assert script.calls["flaky"] == 3
    assert time.perf_counter() - started >= 0.1 + 0.2  # backoff 0.1 s, then doubled


def test_client_errors_and_non_json_answers_are_not_retried(endpoint: str, script: Script) -> None:
    (refused,) = score(template_config(f"{endpoint}/score/refuse", retries=3), [ScoreItem("p", "c")])
    (text,) = score(template_config(f"{endpoint}/score/text", retries=3), [ScoreItem("p", "c")])
    assert refused.error == f'{endpoint}/score/refuse answered HTTP 400: {{"detail":"bad request"}}'
    assert text.error == f"{endpoint}/score/text answered with a body that is not JSON: 'reward: 1'"
    assert (script.calls["refuse"], script.calls["text"]) == (1, 1)


def test_a_slow_endpoint_is_a_timeout(endpoint: str) -> None:
    (result,) = score(
        template_config(f"{endpoint}/score/slow", timeout_s=0.2, retries=0), [ScoreItem("p", "c")]
    )
    assert result.status == "timeout" and result.error == f"{endpoint}/score/slow timed out (ReadTimeout)"


def test_an_unreachable_endpoint_is_an_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1/score"
    (result,) = score(http_config(url, retries=1), [ScoreItem("p", "c")])
    assert result.status == "error" and result.error.startswith(f"{url} unreachable: ConnectError")  # type: ignore[union-attr]


def test_requests_in_flight_stay_within_the_concurrency_limit(endpoint: str, script: Script) -> None:
    script.max_in_flight = 0
    started = time.perf_counter()
    results = score(template_config(f"{endpoint}/score/busy", max_concurrency=2), [ScoreItem("p", "c")] * 6)
    assert all(r.status == "ok" for r in results)
    assert script.max_in_flight == 2
    assert time.perf_counter() - started >= 0.3  # 6 requests of 0.1 s, 2 at a time


def test_the_circuit_opens_and_later_items_fail_fast(endpoint: str, script: Script) -> None:
    script.calls["down"] = 0
    config = template_config(f"{endpoint}/score/down", retries=0, circuit_failures=2, circuit_cooldown_s=60)

    async def run() -> list[list[ScorerResult]]:
        scorer = HttpScorer(config)
        try:
            return [await scorer.score([ScoreItem("p", "c")]) for _ in range(4)]
        finally:
            await scorer.close()

    rounds = asyncio.run(run())
    assert [r[0].error for r in rounds[:2]] == [f"{endpoint}/score/down answered HTTP 500"] * 2
    assert rounds[2][0].error == "circuit open after 2 consecutive failed requests; next try in 60.0 s"
    assert script.calls["down"] == 2  # the open circuit sent nothing


def test_config_rejects_a_template_format_without_a_template_and_a_bad_url() -> None:
    with pytest.raises(ValueError, match="format: template needs request_template"):
        HttpScorerConfig(name="remote", url="http://x/score", format="template")
    with pytest.raises(ValueError, match="url must start with http:// or https://"):
        HttpScorerConfig(name="remote", url="localhost:8100/v1/score")


def test_a_server_scoring_through_another_server(remote_reward_server: str) -> None:
    """The http scorer inside a reward server, combined with a local scorer by weight."""
    config = reward_config(
        HttpScorerConfig(name="remote", url=f"{remote_reward_server}/v1/score", weight=10.0),
        python_scorer("completion_length", name="length"),
    )
    with TestClient(create_app(config), base_url=LOOPBACK) as client:
        items = [{"prompt": "1+1=", "completion": "2", "reference": "2"}]
        result = client.post("/v1/score", json={"items": items}).json()["results"][0]
    assert result == {"reward": 11.0, "status": "ok", "scores": {"remote": 1.0, "length": 1.0}, "error": None}
