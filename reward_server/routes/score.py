"""POST /v1/score: the versioned Tandem scoring API (one result per item, in request order)."""

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError

from reward_server import metrics
from reward_server.auth import authorize
from reward_server.limits import check_item_count
from reward_server.models import ScoreRequest, ScoreResponse
from reward_server.openapi import BEARER_SECURITY, request_body
from reward_server.routes.direct import DirectRoute
from reward_server.scoring import WeightedScorer
from reward_server.service import ScoringService, UnknownScorerError
from reward_server.wire import require_json, score_response

router = APIRouter(tags=["scoring"], route_class=DirectRoute)


# The hot path, kept lean: the body is read raw and decoded by wire.py (msgspec, limits included)
# rather than by FastAPI (json.loads, then pydantic), the largest cost of a request once; and the
# route calls the endpoint directly (DirectRoute), so the token is checked here, not by a dependency.
# The docs still show ScoreRequest, ScoreResponse and the bearer scheme.
@router.post(
    "/v1/score", response_model=ScoreResponse, openapi_extra=request_body(ScoreRequest) | BEARER_SECURITY
)
async def score(http_request: Request) -> Response:
    service = authorize(http_request)
    require_json(http_request.headers.get("content-type"))
    items, scorer_names = service.request_decoder.decode(await http_request.body())
    check_item_count(len(items), service.config)
    scorers = select_scorers(service, scorer_names)
    outcomes = await service.score(items, scorers)
    metrics.record_request("/v1/score", [outcome.status for outcome in outcomes])
    return score_response(outcomes, service.server_version, service.config_hash)


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
