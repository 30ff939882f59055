"""The actors' client of the reward server: batched `POST /v1/score` calls with a deadline and retries.

A transport failure (connection refused, a 5xx, a 429, a read timeout) is retried with exponential
backoff inside the call's deadline; what still fails comes back as one failed outcome per item, with
the reason, never as a reward of 0. A 4xx other than 429 is not retried: the request itself is wrong
and sending it again would not help.

The client speaks only the HTTP contract (ARCHITECTURE.md), so it works against any server that
implements it, and it imports nothing from reward_server/.
"""

import asyncio
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from core.redaction import redact_url
from core.schemas import RewardStatus

RETRIED_STATUS_CODES = frozenset({429, 500, 502, 503, 504})
JSON_HEADERS = {"content-type": "application/json"}
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class RewardItem:
    """One completion to score, in the fields of the `/v1/score` item."""

    prompt: str
    completion: str
    reference: str | None = None
    tests: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": self.prompt, "completion": self.completion}
        if self.reference is not None:
            body["reference"] = self.reference
        if self.tests is not None:
            body["tests"] = self.tests
        if self.metadata:
            body["metadata"] = self.metadata
        return body


@dataclass(frozen=True, slots=True)
class RewardOutcome:
    """The server's verdict on one item, or the client's reason for having none."""

    reward: float | None
    status: RewardStatus
    scores: dict[str, float]
    error: str | None
    # True when no server verdict exists: the request itself failed (unreachable, 5xx, deadline).
    transport_failure: bool = False

    @classmethod
    def failed(cls, error: str, status: RewardStatus = "error", transport: bool = False) -> "RewardOutcome":
        return cls(None, status, {}, error, transport)


@dataclass
class RewardClientStats:
    requests: int = 0
    retries: int = 0
    failed_requests: int = 0
    items_ok: int = 0
    items_failed: int = 0


class RewardClient:
    """Scores items through one reward server; `score` is safe to call concurrently on one event loop."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout_s: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.25,
        batch_size: int = 64,
        max_concurrency: int = 4,
        scorers: Sequence[str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if batch_size < 1 or max_concurrency < 1:
            raise ValueError("batch_size and max_concurrency must be >= 1")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/") + "/v1/score"
        self.shown_url = redact_url(self.url)  # for messages: no password a URL may carry
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.batch_size = batch_size
        self.scorers = list(scorers) if scorers is not None else None
        self.stats = RewardClientStats()
        self._limit = asyncio.Semaphore(max_concurrency)
        self._http = httpx.AsyncClient(headers=headers, transport=transport, timeout=timeout_s)

    async def score(self, items: Sequence[RewardItem]) -> list[RewardOutcome]:
        """One outcome per item, in order, within `timeout_s` of the call's start."""
        deadline = time.monotonic() + self.timeout_s
        chunks = [items[start : start + self.batch_size] for start in range(0, len(items), self.batch_size)]
        results = await asyncio.gather(*(self._score_chunk(chunk, deadline) for chunk in chunks))
        outcomes = [outcome for chunk_outcomes in results for outcome in chunk_outcomes]
        ok = sum(outcome.status == "ok" for outcome in outcomes)
        self.stats.items_ok += ok
        self.stats.items_failed += len(outcomes) - ok
        return outcomes

    async def _score_chunk(self, chunk: Sequence[RewardItem], deadline: float) -> list[RewardOutcome]:
        body: dict[str, Any] = {"items": [item.to_json() for item in chunk]}
        if self.scorers is not None:
            body["scorers"] = self.scorers
        async with self._limit:
            failure = await self._post_with_retries(body, deadline)
        if isinstance(failure, RequestFailure):
            self.stats.failed_requests += 1
            return [RewardOutcome.failed(failure.message, failure.status, transport=True)] * len(chunk)
        return parse_results(failure, len(chunk))

    async def _post_with_retries(self, body: dict[str, Any], deadline: float) -> "dict | RequestFailure":
        attempt = 0
        while True:
            self.stats.requests += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return RequestFailure(f"reward call passed its {self.timeout_s:g} s deadline", "timeout")
            outcome = await self._post_once(body, remaining)
            if not isinstance(outcome, RequestFailure) or not outcome.retryable or attempt >= self.retries:
                if isinstance(outcome, RequestFailure) and attempt:
                    outcome = RequestFailure(
                        f"{outcome.message} (after {attempt + 1} attempts)", outcome.status
                    )
                return outcome
            delay = self.backoff_s * 2**attempt
            if time.monotonic() + delay >= deadline:
                return RequestFailure(
                    f"{outcome.message}; no time left for retry {attempt + 1} before the "
                    f"{self.timeout_s:g} s deadline",
                    "timeout" if outcome.status == "timeout" else "error",
                )
            attempt += 1
            self.stats.retries += 1
            await asyncio.sleep(delay)

    async def _post_once(self, body: dict[str, Any], remaining_s: float) -> "dict | RequestFailure":
        try:
            # msgspec rather than httpx's json.dumps/json.loads: this runs on the actor's background
            # loop, and every millisecond it holds the GIL is one the engine's frontend waits.
            response = await self._http.post(
                self.url, content=_encoder.encode(body), headers=JSON_HEADERS, timeout=remaining_s
            )
        except httpx.TimeoutException as error:
            return RequestFailure(
                f"reward server {self.shown_url} timed out ({type(error).__name__})", "timeout"
            )
        except httpx.TransportError as error:
            return RequestFailure(
                f"reward server {self.shown_url} unreachable: {type(error).__name__}: {error}"
            )
        if response.status_code != 200:
            retryable = response.status_code in RETRIED_STATUS_CODES
            return RequestFailure(
                f"reward server answered HTTP {response.status_code}: {response.text[:500]}",
                retryable=retryable,
            )
        try:
            return msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            pass
        try:  # what only Python's json reads (NaN, Infinity): parse_results judges the values
            return json.loads(response.content)
        except ValueError:
            return RequestFailure(f"reward server answered non-JSON: {response.text[:200]!r}")

    async def aclose(self) -> None:
        await self._http.aclose()


@dataclass(frozen=True, slots=True)
class RequestFailure:
    message: str
    status: RewardStatus = "error"
    retryable: bool = True


def parse_results(payload: dict, expected: int) -> list[RewardOutcome]:
    """Read `/v1/score` results, checking the contract: a wrong count fails every item, an "ok" without
    a finite reward fails that item."""
    results = payload.get("results") if isinstance(payload, dict) else None
    if not isinstance(results, list) or len(results) != expected:
        count = len(results) if isinstance(results, list) else "no"
        return [
            RewardOutcome.failed(f"reward server returned {count} results for {expected} items")
        ] * expected
    return [_parse_result(result) for result in results]


def _parse_result(result: Any) -> RewardOutcome:
    if not isinstance(result, dict) or result.get("status") not in ("ok", "error", "timeout"):
        return RewardOutcome.failed(f"malformed result from the reward server: {str(result)[:200]}")
    scores = {str(name): float(value) for name, value in (result.get("scores") or {}).items()}
    if result["status"] != "ok":
        return RewardOutcome(None, result["status"], scores, str(result.get("error") or "failed"))
    reward = result.get("reward")
    if isinstance(reward, bool) or not isinstance(reward, int | float) or not math.isfinite(reward):
        return RewardOutcome.failed(f"reward server said ok with reward {reward!r}")
    return RewardOutcome(float(reward), "ok", scores, None)
