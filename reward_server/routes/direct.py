"""`DirectRoute`: a FastAPI route whose endpoint takes the raw `Request` and returns a `Response`.

FastAPI's own route solves dependencies and validates parameters on every request, about 20 us
even for an endpoint whose only parameter is the Request, and a dependency adds some 12 us more
(benchmarks/reward_bench.py: a fifth of a 64-item /v1/score request). This route class calls the
endpoint directly. It stays an APIRoute, so /docs and /openapi.json still describe it (its body and
security through openapi.py), and FastAPI's exception handlers still turn HTTPException and
RequestValidationError into the usual 4xx answers.
"""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


class DirectRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint
