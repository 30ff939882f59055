"""Optional bearer-token auth on the scoring routes, and the rule that a public bind needs a token.

Health, readiness and metrics stay open so probes and Prometheus need no secret; they reveal no
prompts or completions.
"""

import ipaddress
import secrets
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from reward_server.service import ServiceDep

bearer = HTTPBearer(auto_error=False, description="reward.auth_token, when the server is configured with one")


# async (like get_service): FastAPI runs a plain `def` dependency on its thread pool, a thread hop per
# request; making both async took /v1/score from 41k to 58k items/s (benchmarks/reward_bench.py).
async def require_token(
    service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    expected = service.config.auth_token
    if expected is None:
        return
    # Constant-time comparison: response timing must not reveal how much of a guess was right.
    if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


Authorized = Annotated[None, Depends(require_token)]


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
