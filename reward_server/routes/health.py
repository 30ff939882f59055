"""GET /health (the process answers), /ready (every scorer is loaded) and /metrics (Prometheus)."""

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from reward_server.service import ServiceDep

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(service: ServiceDep) -> JSONResponse:
    body = {"ready": service.ready, "scorers": list(service.scorers), "config_hash": service.config_hash}
    return JSONResponse(body, status_code=200 if service.ready else 503)


@router.get("/metrics")
async def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
