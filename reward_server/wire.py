"""The JSON codec of POST /v1/score, the reward server's hot path: msgspec in both directions.

msgspec decodes a body straight into `ScoreItem`s, checking the text-length and test-count limits
as it goes, and encodes the results from `ItemScore`s, each in a fraction of the time pydantic and
the limit loop took (64 items: 17 us to decode and check vs 90 + 18 us; benchmarks/reward_bench.py).
pydantic (models.py) remains the documented contract and the author of 422s: a body msgspec refuses
is validated again by `ScoreRequest` and checked by limits.py, whose errors name each bad field in
FastAPI's usual shape (`detail[i].loc` = ["body", "items", 3, "refrence"]). The nesting limit
(reward.max_json_depth, nesting.py) is checked on `metadata` after a fast decode, and on the raw
body before the slow one.
"""

import email.message
from collections.abc import Sequence
from typing import Annotated, Any

import msgspec
from fastapi import HTTPException, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from core.config.reward import RewardConfig
from reward_server.limits import Location, check_item_count, check_score_items
from reward_server.models import ScoreRequest
from reward_server.nesting import check_body_depth, depth_error, nested_deeper
from reward_server.scorers.base import ScoreItem
from reward_server.scoring import ItemScore

DecodedRequest = tuple[list[ScoreItem], list[str] | None]
"""The items to score and the scorer names asked for (None: all)."""


class ScoreRequestDecoder:
    """Decodes /v1/score bodies under one config's limits (reward.max_text_chars, reward.max_tests)."""

    def __init__(self, config: RewardConfig) -> None:
        self.config = config
        text = Annotated[str, msgspec.Meta(max_length=config.max_text_chars)]
        tests = Annotated[list[text], msgspec.Meta(max_length=config.max_tests)]  # type: ignore[valid-type]
        # ScoreItem with the limits in its field types: a subclass, so scorers get ScoreItems.
        item = msgspec.defstruct(
            "LimitedScoreItem",
            [("prompt", text), ("completion", text), ("reference", text | None, None),
             ("tests", tests | None, None), ("metadata", dict[str, Any], {})],
            bases=(ScoreItem,), frozen=True, forbid_unknown_fields=True,
        )  # fmt: skip
        names = Annotated[list[str], msgspec.Meta(min_length=1)]
        fields = [("items", list[item]), ("scorers", names | None, None)]
        self.body_type = msgspec.defstruct("ScoreRequestBody", fields, forbid_unknown_fields=True)
        self._decoder = msgspec.json.Decoder(self.body_type)
        # The body, `items`, the item and `metadata` itself are 4 levels: metadata's dict may nest the rest.
        self._metadata_levels = config.max_json_depth - 3

    def decode(self, body: bytes) -> DecodedRequest:
        """The request, or an HTTPException naming what is wrong (422 per bad field, 413 for too many)."""
        try:
            request = self._decoder.decode(body)
        except (msgspec.DecodeError, RecursionError):  # RecursionError: nested past msgspec's stack
            return self._explain(body)
        # Only `metadata` (any JSON) can nest: every other field's type bounds its depth. A loop over
        # the items costs ~1 us per 64; the walk runs only for items that have metadata.
        for index, item in enumerate(request.items):
            if item.metadata and nested_deeper(item.metadata, self._metadata_levels):
                location = ("body", "items", index, "metadata")
                raise RequestValidationError([depth_error(location, self.config.max_json_depth)])
        return request.items, request.scorers

    def _explain(self, body: bytes) -> DecodedRequest:
        """A body msgspec refused, through pydantic and the limit checks, which name each bad field."""
        # First the nesting, which pydantic reports, past a depth of its own, as invalid JSON at a
        # column: named here as the field that holds the too-deep value.
        check_body_depth(body, self.config.max_json_depth, score_field)
        try:
            request = ScoreRequest.model_validate_json(body)
        except ValidationError as error:
            raise body_errors(error) from None
        items = [
            ScoreItem(item.prompt, item.completion, item.reference, item.tests, item.metadata)
            for item in request.items
        ]
        check_item_count(len(items), self.config)
        check_score_items(items, self.config)
        # Valid after all: msgspec and pydantic disagree on an edge case, and pydantic decides.
        return items, request.scorers


def body_errors(error: ValidationError) -> RequestValidationError:
    """pydantic's errors on a request body in FastAPI's 422 shape: under "body", and without echoing
    the whole body back as the input of a `json_invalid` (a body may be megabytes)."""
    return RequestValidationError(
        [
            {key: value for key, value in entry.items() if key != "input" or entry["type"] != "json_invalid"}
            | {"loc": ("body", *entry["loc"])}
            for entry in error.errors(include_url=False)
        ]
    )


def score_field(path: Location) -> Location:
    """The field of a /v1/score body that a too-deep container is in: (`items`, i, field) inside an
    item, else (field, i) or (field, key)."""
    return path[:3] if path[:1] == ("items",) else path[:2]


_encoder = msgspec.json.Encoder()


def require_json(content_type: str | None) -> None:
    """415 unless the body is declared JSON (`application/json` or `application/*+json`), as FastAPI
    requires of the bodies it parses. Without the check a web page could POST a `text/plain` body to a
    loopback server with no token (a "simple" request, sent without a CORS preflight) and have it run
    code through the unit-test scorer."""
    if content_type == "application/json":
        return
    message = email.message.Message()
    message["content-type"] = content_type or ""
    subtype = message.get_content_subtype()
    if (
        content_type
        and message.get_content_maintype() == "application"
        and (subtype == "json" or subtype.endswith("+json"))
    ):
        return
    raise HTTPException(415, f"the request body must be application/json; got content-type {content_type!r}")


def score_response(results: Sequence[ItemScore], server_version: str, config_hash: str) -> Response:
    """The body of `models.ScoreResponse`, encoded by msgspec from the ItemScore structs."""
    body = {"results": results, "server_version": server_version, "config_hash": config_hash}
    return Response(_encoder.encode(body), media_type="application/json")
