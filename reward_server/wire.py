"""The JSON codec of POST /v1/score, the reward server's hot path: msgspec in both directions.

msgspec decodes a body straight into `ScoreItem`s, checking the text-length and test-count limits
as it goes, and encodes the results from `ItemScore`s, each in a fraction of the time pydantic and
the limit loop took (64 items: 17 us to decode and check vs 90 + 18 us; benchmarks/reward_bench.py).
pydantic (models.py) remains the documented contract and the author of 422s: a body msgspec refuses
is validated again by `ScoreRequest` and checked by limits.py, whose errors name each bad field in
FastAPI's usual shape (`detail[i].loc` = ["body", "items", 3, "refrence"]).
"""

import email.message
from collections.abc import Sequence
from typing import Annotated, Any

import msgspec
from fastapi import HTTPException, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from core.config.reward import RewardConfig
from reward_server.limits import check_item_count, check_score_items
from reward_server.models import ScoreRequest
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

    def decode(self, body: bytes) -> DecodedRequest:
        """The request, or an HTTPException naming what is wrong (422 per bad field, 413 for too many)."""
        try:
            request = self._decoder.decode(body)
        except msgspec.DecodeError:
            return self._explain(body)
        return request.items, request.scorers

    def _explain(self, body: bytes) -> DecodedRequest:
        """A body msgspec refused, through pydantic and the limit checks, which name each bad field."""
        try:
            request = ScoreRequest.model_validate_json(body)
        except ValidationError as error:
            raise RequestValidationError(
                [error | {"loc": ("body", *error["loc"])} for error in error.errors(include_url=False)]
            ) from None
        items = [
            ScoreItem(item.prompt, item.completion, item.reference, item.tests, item.metadata)
            for item in request.items
        ]
        check_item_count(len(items), self.config)
        check_score_items(items, self.config)
        # Valid after all: msgspec and pydantic disagree on an edge case, and pydantic decides.
        return items, request.scorers


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
