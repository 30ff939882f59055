"""`http`: score with any external endpoint (another Tandem server, an OpenRLHF reward server, or any
JSON API through a request template).

Each request: at most `max_concurrency` in flight; connection errors, timeouts, 5xx and 429 answers
are retried `retries` times with exponential backoff (`backoff_s`, 2x, 4x, ...); another 4xx or a
malformed answer is not retried (asking again would not help). Requests that still fail count towards the
circuit breaker; while it is open, items fail at once with the breaker's reason. Every failure is
reported on the items of that request, as "timeout" when the last attempt timed out, else "error".
"""

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from core.config.reward import HttpScorerConfig
from core.redaction import redact_url
from reward_server.circuit import CircuitBreaker, CircuitOpenError
from reward_server.scorers import http_formats as formats
from reward_server.scorers.base import ScoreItem, ScorerResult


class EndpointError(RuntimeError):
    """A request that failed; `status` is what its items report, `retryable` whether to try again."""

    def __init__(self, message: str, status: str = "error", retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class HttpScorer:
    def __init__(self, config: HttpScorerConfig) -> None:
        self.name = config.name
        self.config = config
        self.client = httpx.AsyncClient(timeout=config.timeout_s, headers=config.headers)
        self.slots = asyncio.Semaphore(config.max_concurrency)
        self.breaker = CircuitBreaker(config.circuit_failures, config.circuit_cooldown_s)

    async def score(self, items: Sequence[ScoreItem]) -> list[ScorerResult]:
        if self.config.format == "template":
            batches = [[item] for item in items]
        else:
            size = self.config.batch_size
            batches = [list(items[start : start + size]) for start in range(0, len(items), size)]
        scored = await asyncio.gather(*(self.score_batch(batch) for batch in batches))
        return [result for batch in scored for result in batch]

    async def score_batch(self, items: list[ScoreItem]) -> list[ScorerResult]:
        body, parse = self.encode(items)
        try:
            response = await self.post(body)
            return parse(response)
        except CircuitOpenError as error:
            return [ScorerResult.failed(str(error))] * len(items)
        except EndpointError as error:
            return [ScorerResult.failed(str(error), error.status)] * len(items)  # type: ignore[arg-type]
        except formats.ResponseFormatError as error:
            return [ScorerResult.failed(f"unexpected response from {self.config.url}: {error}")] * len(items)

    def encode(self, items: list[ScoreItem]) -> tuple[Any, Callable[[Any], list[ScorerResult]]]:
        """The request body for `items`, and the parser that turns the response into their results."""
        count = len(items)
        if self.config.format == "tandem":
            return formats.tandem_body(items), lambda body: formats.tandem_results(body, count)
        if self.config.format == "openrlhf":
            return formats.openrlhf_body(items), lambda body: formats.openrlhf_results(body, count)
        path = self.config.response_path
        return (
            formats.template_body(self.config.request_template, items[0]),
            lambda body: [formats.as_reward(formats.value_at(body, path), path)],
        )

    async def post(self, body: Any) -> Any:
        """POST with retries, under the circuit breaker; the decoded JSON answer."""
        self.breaker.admit()
        reached = False
        try:
            answer = await self.post_with_retries(body)
            reached = True
            return answer
        except EndpointError as error:
            reached = not error.retryable  # a 4xx or bad JSON: the endpoint is up, the exchange is wrong
            raise
        finally:
            # Also on cancellation (the scorer deadline): a hung endpoint must be able to open the circuit.
            self.breaker.record(reached)

    async def post_with_retries(self, body: Any) -> Any:
        attempts = self.config.retries + 1
        for attempt in range(attempts):
            try:
                return await self.post_once(body)
            except EndpointError as error:
                if not error.retryable or attempt == attempts - 1:
                    if error.retryable and attempts > 1:
                        raise EndpointError(
                            f"{error} (gave up after {attempts} attempts)", error.status, retryable=True
                        ) from None
                    raise
            await asyncio.sleep(self.config.backoff_s * 2**attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def post_once(self, body: Any) -> Any:
        # Messages (item errors, logs, dead letters) show the URL without a password it may carry.
        url, shown = self.config.url, redact_url(self.config.url)
        async with self.slots:
            try:
                response = await self.client.post(url, json=body)
            except httpx.TimeoutException as error:
                raise EndpointError(f"{shown} timed out ({type(error).__name__})", "timeout", True) from None
            except httpx.TransportError as error:
                raise EndpointError(
                    f"{shown} unreachable: {type(error).__name__}: {error}", retryable=True
                ) from None
        # 429 (rate limited) passes with time, like a 5xx; other 4xx would be refused again.
        if response.status_code >= 500 or response.status_code == 429:
            raise EndpointError(f"{shown} answered HTTP {response.status_code}", retryable=True)
        if response.status_code >= 400:
            raise EndpointError(f"{shown} answered HTTP {response.status_code}: {response.text[:300]}")
        try:
            return response.json()
        except ValueError:
            raise EndpointError(
                f"{shown} answered with a body that is not JSON: {response.text[:100]!r}"
            ) from None

    async def close(self) -> None:
        await self.client.aclose()
