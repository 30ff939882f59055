"""Request limits: body size and item count (HTTP 413), text lengths and test counts (HTTP 422).

The body limit is an ASGI middleware so an oversized body is refused before it is parsed (a chunked
one as it is read, by whichever route reads it). Length errors use FastAPI's 422 shape
(`detail[i].loc` is the path to the field), like any malformed body.
"""

from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.config.reward import RewardConfig
from reward_server.scorers.base import ScoreItem

Location = tuple[str | int, ...]
MAX_REPORTED_ERRORS = 20  # enough to fix a request; a 10k-item request should not get a 10k-line reply


class BodySizeLimit:
    """Answers 413 to a body over `max_bytes`: at once from Content-Length, or while a chunked body
    (no Content-Length) is read. Nothing is read here: a route that refuses a request before reading
    its body (401, 415) never receives a byte of it, chunked or not."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            detail = f"request body exceeds reward.max_body_bytes={self.max_bytes}"
            await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
            return
        if declared is not None or b"transfer-encoding" not in headers:
            # The HTTP server never delivers more bytes than Content-Length announces.
            await self.app(scope, receive, send)
            return
        await self.app(scope, self.counted(receive), send)

    def counted(self, receive: Receive) -> Receive:
        """`receive` that raises HTTPException(413), which FastAPI answers as such, once the chunks
        read add up to more than `max_bytes`."""
        size = 0

        async def counting() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > self.max_bytes:
                    raise HTTPException(413, f"request body exceeds reward.max_body_bytes={self.max_bytes}")
            return message

        return counting


def check_item_count(count: int, config: RewardConfig) -> None:
    if count > config.max_items:
        raise HTTPException(413, f"{count} items exceed reward.max_items={config.max_items}")


def check_score_items(items: Sequence[ScoreItem], config: RewardConfig) -> None:
    """422 naming every over-long text (prompt, completion, reference, tests[j]) and over-full `tests`."""
    if not any(breaks_a_limit(item, config.max_text_chars, config.max_tests) for item in items):
        return  # the common case, checked without building a record per text
    texts: list[tuple[Location, str | None]] = []
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        where: Location = ("body", "items", index)
        texts += [((*where, "prompt"), item.prompt), ((*where, "completion"), item.completion)]
        texts.append(((*where, "reference"), item.reference))
        tests = item.tests or []
        if len(tests) > config.max_tests:
            errors.append(too_many((*where, "tests"), len(tests), config.max_tests))
        texts += [((*where, "tests", position), test) for position, test in enumerate(tests)]
    raise_if_any(errors + text_errors(texts, config.max_text_chars))


def breaks_a_limit(item: ScoreItem, max_chars: int, max_tests: int) -> bool:
    if len(item.prompt) > max_chars or len(item.completion) > max_chars:
        return True
    if item.reference is not None and len(item.reference) > max_chars:
        return True
    return bool(item.tests) and (
        len(item.tests) > max_tests or any(len(test) > max_chars for test in item.tests)  # type: ignore[union-attr]
    )


def text_errors(texts: Iterable[tuple[Location, str | None]], max_chars: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "string_too_long",
            "loc": location,
            "msg": f"String should have at most {max_chars} characters (reward.max_text_chars), "
            f"got {len(text)}",
            "ctx": {"max_length": max_chars},
        }
        for location, text in texts
        if text is not None and len(text) > max_chars
    ]


def too_many(location: Location, count: int, limit: int) -> dict[str, Any]:
    return {
        "type": "too_long",
        "loc": location,
        "msg": f"List should have at most {limit} items (reward.max_tests), got {count}",
        "ctx": {"max_length": limit},
    }


def raise_if_any(errors: list[dict[str, Any]]) -> None:
    if errors:
        raise RequestValidationError(errors[:MAX_REPORTED_ERRORS])
