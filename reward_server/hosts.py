"""DNS-rebinding defence: a reward server bound to loopback answers only requests addressed to loopback.

A web page on evil.example can point its own name at 127.0.0.1 once loaded and then send the local
server same-origin requests, JSON bodies included, which neither CORS nor the 415 on non-JSON bodies
stop; with no token configured (the loopback default) it could score, and run code through the
unit-test scorer. The browser still sends `Host: evil.example`. A server listening on loopback only
is reached by loopback names, so any other Host is refused with 421 (Misdirected Request). The names
accepted are `localhost` and the loopback addresses (127.0.0.0/8, `[::1]`), with any port: the name
is what a rebinding page cannot fake, and the port may be one uvicorn picked.

Bound beyond loopback the check is off: the bearer token is required there (auth.py), which a
rebinding page does not have, and the names the server is reached by are not known to it.
"""

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from reward_server.auth import is_loopback

MAX_REMEMBERED = 64  # accepted Host values kept for a set lookup; a bound, since every port is a new value


class LoopbackHostGuard:
    """Answers 421 to an HTTP request without exactly one Host header naming loopback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.accepted: set[bytes] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            hosts = [value for name, value in scope["headers"] if name == b"host"]
            if len(hosts) != 1 or (hosts[0] not in self.accepted and not self.accept(hosts[0])):
                await self.refuse(hosts, scope, receive, send)
                return
        await self.app(scope, receive, send)

    def accept(self, host: bytes) -> bool:
        """Whether `host` names loopback; remembered when it does."""
        if not is_loopback_host(host.decode("latin-1")):
            return False
        if len(self.accepted) < MAX_REMEMBERED:
            self.accepted.add(host)
        return True

    async def refuse(self, hosts: list[bytes], scope: Scope, receive: Receive, send: Send) -> None:
        given = ", ".join(repr(host.decode("latin-1")) for host in hosts)
        refused = f"Host header {given} refused" if hosts else "request without a Host header refused"
        detail = (
            f"{refused}: this reward server listens on loopback only and answers requests addressed "
            "to localhost, 127.0.0.1 or [::1] (defence against DNS rebinding)"
        )
        await JSONResponse({"detail": detail}, status_code=421)(scope, receive, send)


def is_loopback_host(host: str) -> bool:
    """Whether a Host header value (`name`, `name:port`, `[v6]`, `[v6]:port`) names loopback."""
    if host.startswith("["):
        name, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return False
        colon, port = rest[:1], rest[1:]
    else:
        name, colon, port = host.partition(":")
    if colon and not (port.isdigit() and port.isascii()):
        return False  # "name:" or a port that is not a number
    return bool(name) and is_loopback(name.lower())
