"""POST /get_reward: OpenRLHF's remote reward format, so its trainers can use this server as-is.

OpenRLHF sends `query` = prompt + response (its chat template already applied) with the matching
`prompts` and `labels` (references). The completion is `query[i]` minus the prefix `prompts[i]`; a
query that does not start with its prompt is that item's error rather than a guess. Without
`prompts` (older clients) the whole query is the completion and the prompt is empty.

Failure is never a 0: a failed item gets `null` in `rewards` and `scores`, and `statuses`/`errors`
say why. OpenRLHF turns `rewards` into a tensor, so a null makes its step fail loudly instead of
training on a fake reward; an HTTP 5xx would instead make its client retry the same batch five
times first. `extra_logs` holds per-item numbers only (OpenRLHF logs them as tensors): each
scorer's score and `reward_failed` (1.0 for a failed item).
"""

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from reward_server import metrics
from reward_server.auth import authorize
from reward_server.limits import Location, check_item_count, raise_if_any, text_errors
from reward_server.models import OpenRLHFRequest, OpenRLHFResponse, json_response
from reward_server.nesting import check_body_depth
from reward_server.openapi import BEARER_SECURITY, request_body
from reward_server.routes.direct import DirectRoute
from reward_server.scorers.base import ScoreItem
from reward_server.scoring import ItemScore
from reward_server.wire import body_errors, require_json

router = APIRouter(tags=["scoring"], route_class=DirectRoute)


# The route reads its own body (DirectRoute), as /v1/score does, so that the token and the content type
# are checked before a byte of the body is read: FastAPI reads and parses a body before it runs any
# dependency, and a 7 MiB body cost 2 s of parsing before its 401.
@router.post(
    "/get_reward",
    response_model=OpenRLHFResponse,
    openapi_extra=request_body(OpenRLHFRequest) | BEARER_SECURITY,
)
async def get_reward(http_request: Request) -> Response:
    service = authorize(http_request)
    require_json(http_request.headers.get("content-type"))
    request = parse_request(await http_request.body(), service.config.max_json_depth)
    check_item_count(len(request.query), service.config)
    check_request(request, service.config.max_text_chars)
    scorers = service.select(None)
    split = [split_query(request, index) for index in range(len(request.query))]
    scorable = [item for item in split if isinstance(item, ScoreItem)]
    scored = iter(await service.score(scorable, scorers))
    outcomes = [next(scored) if isinstance(item, ScoreItem) else item for item in split]
    metrics.record_request("/get_reward", [outcome.status for outcome in outcomes])
    rewards = [outcome.reward for outcome in outcomes]
    extra_logs: dict[str, list[float | None]] = {
        entry.name: [outcome.scores.get(entry.name) for outcome in outcomes] for entry in scorers
    }
    extra_logs["reward_failed"] = [float(outcome.status != "ok") for outcome in outcomes]
    response = OpenRLHFResponse(
        rewards=rewards,
        scores=list(rewards),
        extra_logs=extra_logs,
        statuses=[outcome.status for outcome in outcomes],
        errors=[outcome.error for outcome in outcomes],
    )
    return json_response(response)


def parse_request(body: bytes, max_json_depth: int) -> OpenRLHFRequest:
    """The body as an `OpenRLHFRequest`, or a 422 naming each bad field (FastAPI's shape)."""
    # Nesting first, fields ignored as extras included: pydantic would parse them, and past a depth of
    # its own report only invalid JSON at a column. Named as (field, index), e.g. labels, 3.
    check_body_depth(body, max_json_depth, lambda path: path[:2])
    try:
        return OpenRLHFRequest.model_validate_json(body)
    except ValidationError as error:
        raise body_errors(error) from None


def split_query(request: OpenRLHFRequest, index: int) -> ScoreItem | ItemScore:
    """The item to score, or a failed result when the query does not start with its prompt."""
    query = request.query[index]
    prompt = request.prompts[index] if request.prompts is not None else ""
    label = request.labels[index] if request.labels is not None else None
    if not query.startswith(prompt):
        return ItemScore(
            None, "error", {}, "query does not start with its prompt; cannot split the response off"
        )
    reference = None if label is None else str(label)
    return ScoreItem(prompt=prompt, completion=query[len(prompt) :], reference=reference)


def check_request(request: OpenRLHFRequest, max_chars: int) -> None:
    """422 when `prompts` or `labels` do not match `query` one to one, or a text is too long."""
    errors: list[dict[str, Any]] = []
    for field, values in (("prompts", request.prompts), ("labels", request.labels)):
        if values is not None and len(values) != len(request.query):
            message = f"{field} has {len(values)} entries but query has {len(request.query)}"
            errors.append({"type": "length_mismatch", "loc": ("body", field), "msg": message})
    texts: list[tuple[Location, str | None]] = [
        (("body", "query", i), q) for i, q in enumerate(request.query)
    ]
    texts += [(("body", "prompts", i), p) for i, p in enumerate(request.prompts or [])]
    texts += [
        (("body", "labels", i), label)
        for i, label in enumerate(request.labels or [])
        if isinstance(label, str)
    ]
    raise_if_any(errors + text_errors(texts, max_chars))
