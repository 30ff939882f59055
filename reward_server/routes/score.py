"""POST /v1/score: the versioned Tandem scoring API (one result per item, in request order)."""

from fastapi import APIRouter, Response
from fastapi.exceptions import RequestValidationError

from reward_server import metrics
from reward_server.auth import Authorized
from reward_server.limits import check_item_count, check_score_items
from reward_server.models import ScoreRequest, ScoreResponse, json_response
from reward_server.scoring import WeightedScorer
from reward_server.service import ScoringService, ServiceDep, UnknownScorerError

router = APIRouter(tags=["scoring"])


@router.post("/v1/score", response_model=ScoreResponse)
async def score(request: ScoreRequest, service: ServiceDep, _: Authorized) -> Response:
    check_item_count(len(request.items), service.config)
    check_score_items(request.items, service.config)
    scorers = select_scorers(service, request.scorers)
    outcomes = await service.score(request.items, scorers)
    metrics.record_request("/v1/score", [outcome.status for outcome in outcomes])
    response = ScoreResponse(
        results=outcomes, server_version=service.server_version, config_hash=service.config_hash
    )
    return json_response(response)


def select_scorers(service: ScoringService, names: list[str] | None) -> list[WeightedScorer]:
    """The requested scorers; unknown names are a 422 that names each one and lists the configured ones."""
    try:
        return service.select(names)
    except UnknownScorerError as error:
        raise RequestValidationError(
            [
                {
                    "type": "unknown_scorer",
                    "loc": ("body", "scorers", index),
                    "msg": f"unknown scorer {name!r}; configured: {error.configured}",
                    "input": name,
                }
                for index, name in error.unknown
            ]
        ) from None
