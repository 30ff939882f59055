"""OpenAPI additions for the scoring routes, which read their own body and check their own token.

FastAPI documents only the bodies it parses and the security schemes of its `Security` classes.
Both scoring routes read their own bodies (for speed on /v1/score, and so the bearer token is checked
before a body is read, auth.py); these helpers put the request models and the bearer scheme back
into /openapi.json and /docs.
"""

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

BEARER_SCHEME = "bearer"
BEARER_SECURITY: dict[str, Any] = {"security": [{BEARER_SCHEME: []}]}
"""`openapi_extra` of a route that needs the bearer token when reward.auth_token is set."""


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` of a route whose JSON body is `model` (registered by `document`)."""
    reference = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": reference}}}}


def document(app: FastAPI, request_models: list[type[BaseModel]]) -> None:
    """Add the request models' schemas and the bearer scheme to the app's OpenAPI components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()  # cached by FastAPI after the first call; adding the same entries again is a no-op
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for model in request_models:
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(model_schema.pop("$defs", {}))
            schemas[model.__name__] = model_schema
        components.setdefault("securitySchemes", {})[BEARER_SCHEME] = {
            "type": "http",
            "scheme": "bearer",
            "description": "reward.auth_token, when the server is configured with one",
        }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
