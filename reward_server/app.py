"""`create_app(config)`: the reward server's FastAPI application.

Bound to loopback (reward.host), the app answers only requests addressed to a loopback name
(hosts.py); beyond loopback it needs a bearer token instead (auth.py).

The lifespan builds every configured scorer before the server accepts requests (a scorer that
cannot start, such as an entailment model without an entailment label, stops the start-up with its
name in the message) and closes them on shutdown.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from core.config.reward import RewardConfig
from reward_server.auth import is_loopback, require_token_for_public_bind
from reward_server.hosts import LoopbackHostGuard
from reward_server.limits import BodySizeLimit
from reward_server.models import OpenRLHFRequest, ScoreRequest
from reward_server.openapi import document
from reward_server.routes import health, openrlhf, score
from reward_server.service import ScoringService

CONFIG_ENV = "TANDEM_REWARD_SERVER_CONFIG"
"""Environment variable carrying the reward config (JSON) to uvicorn worker processes."""


def create_app(config: RewardConfig) -> FastAPI:
    require_token_for_public_bind(config.host, config.auth_token)
    service = ScoringService(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.close()

    app = FastAPI(
        title="Tandem reward server",
        version=service.server_version,
        summary="Scores completions with named, weighted scorers; failures are reported, never a 0.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes)
    if is_loopback(config.host):
        app.add_middleware(LoopbackHostGuard)  # added last, so it runs first: refuses before all else
    for router in (score.router, openrlhf.router, health.router):
        app.include_router(router)
    document(app, request_models=[ScoreRequest, OpenRLHFRequest])
    return app


def app_from_environment() -> FastAPI:
    """Factory for uvicorn workers (`--workers N` needs an import string, not an app object)."""
    return create_app(RewardConfig.model_validate_json(os.environ[CONFIG_ENV]))
