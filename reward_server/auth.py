"""Optional bearer-token auth on the scoring routes, and the rule that a public bind needs a token.

Health, readiness and metrics stay open so probes and Prometheus need no secret; they reveal no
prompts or completions.
"""

import ipaddress
import secrets

from fastapi import HTTPException, Request

from reward_server.service import ScoringService


def authorize(request: Request) -> ScoringService:
    """The scoring service, once the request carries the bearer token (when one is configured).

    The scoring routes call this first thing, before reading their bodies (routes/direct.py): FastAPI's
    `HTTPBearer` and dependencies run only after FastAPI has read and parsed the whole body, and cost
    42 us a request besides (benchmarks/reward_bench.py); openapi.py documents the scheme instead."""
    service: ScoringService = request.app.state.service
    expected = service.config.auth_token
    if expected is None:
        return service
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    # Constant-time comparison: response timing must not reveal how much of a guess was right.
    wrong = not credentials or not secrets.compare_digest(credentials.encode(), expected.encode())
    if scheme.lower() != "bearer" or wrong:
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
    return service


def require_token_for_public_bind(host: str, auth_token: str | None) -> None:
    """Refuse to serve beyond loopback without a token: anyone who can reach the port could make the
    server run their code (unit_tests) or call its endpoints (http) on their behalf."""
    if auth_token is None and not is_loopback(host):
        raise ValueError(
            f"reward server: binding to {host!r} (not a loopback address) requires reward.auth_token; "
            "set it (e.g. TANDEM_REWARD__AUTH_TOKEN=...) or bind to 127.0.0.1"
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name may resolve to any interface
