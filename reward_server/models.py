"""Request and response bodies of the reward server's HTTP API (the contract in ARCHITECTURE.md).

Unknown fields in a /v1/score body are errors (422 naming them), so a misspelt `refrence` is caught
instead of silently scoring without a reference. The OpenRLHF body ignores extra fields, because its
clients add fields between versions.
"""

from dataclasses import field
from typing import Any, Literal

from fastapi import Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic.dataclasses import dataclass

Status = Literal["ok", "error", "timeout"]


# The documented shape of scorers.base.ScoreItem, field for field (a test compares them). Requests are
# decoded by msgspec into ScoreItem (wire.py); this model validates only a body msgspec refused, to
# name each bad field in FastAPI's 422 shape.
@dataclass(config=ConfigDict(extra="forbid"), frozen=True, slots=True)
class ScoreItemIn:
    """One completion to score: `prompt`, `completion`, and what scorers check it against:
    `reference` (exact_match, entailment), `tests` (unit_tests), `metadata` (python functions)."""

    prompt: str
    completion: str
    reference: str | None = None
    tests: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ScoreItemIn]
    # An empty list would make every reward an empty sum, a silent 0: it is a 422 instead.
    scorers: list[str] | None = Field(
        None, min_length=1, description="Configured scorer names to use; all when omitted."
    )


class ScoreResult(BaseModel):
    """The documented shape of scoring.ItemScore, field for field (a test compares them)."""

    reward: float | None
    status: Status
    scores: dict[str, float]
    error: str | None


class ScoreResponse(BaseModel):
    """One result per item, in request order. A result's `reward` is the weighted sum of its `scores`,
    null unless `status` is ok; `scores` holds the scorers that succeeded; `error` names each failing
    scorer and why."""

    results: list[ScoreResult]
    server_version: str
    config_hash: str


def json_response(body: BaseModel) -> Response:
    """Serialise a response model in pydantic's core and send it as is: FastAPI would otherwise dump it
    to dicts, validate those again and encode them once more."""
    return Response(body.model_dump_json(), media_type="application/json")


class OpenRLHFRequest(BaseModel):
    """OpenRLHF's remote reward body: `query[i]` is `prompts[i]` followed by the response."""

    model_config = ConfigDict(extra="ignore")

    query: list[str]
    prompts: list[str] | None = None
    labels: list[str | int | float | None] | None = None


class OpenRLHFResponse(BaseModel):
    """`rewards` and `scores` hold null for a failed item (never 0); `statuses` and `errors` say why."""

    rewards: list[float | None]
    scores: list[float | None]
    extra_logs: dict[str, list[float | None]]
    statuses: list[Status]
    errors: list[str | None]
