"""The /v1/score hot path: msgspec decoding and encoding (wire.py) against the documented pydantic models.

The server decodes bodies with msgspec and documents them with pydantic; these tests keep the two
in step, check that a body only pydantic accepts is still scored, and that /openapi.json describes
the route that parses its own body.
"""

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter
from reward_support import LOOPBACK, exact_match, item, python_scorer, reward_config

from reward_server.app import create_app
from reward_server.models import ScoreItemIn, ScoreRequest, ScoreResponse, ScoreResult
from reward_server.scorers.base import ScoreItem
from reward_server.scoring import ItemScore
from reward_server.wire import ScoreRequestDecoder

CONFIG = reward_config(exact_match(), python_scorer("metadata_weight", name="weight"))


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(CONFIG), base_url=LOOPBACK) as test_client:
        yield test_client


def shape(schema: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Property names (in order) and required names of an object's JSON schema."""
    return list(schema["properties"]), sorted(schema.get("required", []))


def msgspec_schema(struct: type) -> dict[str, Any]:
    schema = msgspec.json.schema(struct)
    return schema["$defs"][schema["$ref"].rsplit("/", 1)[-1]] if "$ref" in schema else schema


@pytest.mark.parametrize(
    ("fast", "documented"),
    [
        (ScoreItem, TypeAdapter(ScoreItemIn).json_schema()),
        (ItemScore, ScoreResult.model_json_schema()),
        (ScoreRequestDecoder(CONFIG).body_type, ScoreRequest.model_json_schema()),
    ],
    ids=["item", "result", "request"],
)
def test_the_msgspec_types_and_the_documented_models_have_the_same_fields(
    fast: type, documented: dict
) -> None:
    assert shape(msgspec_schema(fast)) == shape(documented)


def test_the_limited_items_are_score_items_with_the_same_defaults() -> None:
    items, names = ScoreRequestDecoder(CONFIG).decode(b'{"items": [{"prompt": "p", "completion": "c"}]}')
    (decoded,) = items
    assert isinstance(decoded, ScoreItem) and names is None
    assert (decoded.reference, decoded.tests, decoded.metadata) == (None, None, {})
    assert ScoreItemIn(prompt="p", completion="c") == ScoreItemIn(**msgspec.structs.asdict(decoded))


def test_a_body_only_pydantic_accepts_is_still_scored(client: TestClient) -> None:
    # msgspec refuses NaN in JSON, pydantic reads it: the slow path decides, and the item is scored.
    body = b'{"items": [{"prompt": "1+1=", "completion": "2", "reference": "2", "metadata": '
    body += b'{"weight": 3, "x": NaN}}]}'
    response = client.post("/v1/score", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["scores"] == {"exact_match": 1.0, "weight": 3.0}


def test_the_encoded_response_is_a_valid_score_response(client: TestClient) -> None:
    items = [item("1+1=", "2", "2", metadata={"weight": 2}), item("1+1=", "3", None)]
    response = client.post("/v1/score", json={"items": items})
    parsed = ScoreResponse.model_validate_json(response.content)
    assert [r.status for r in parsed.results] == ["ok", "error"]
    assert parsed.results[0].reward == 3.0 and parsed.results[1].reward is None


def test_openapi_documents_the_bodies_the_response_and_the_bearer_scheme(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/v1/score"]["post"]
    body_ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    response_ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    components = schema["components"]["schemas"]
    request_schema = components[body_ref.rsplit("/", 1)[-1]]
    item_ref = request_schema["properties"]["items"]["items"]["$ref"]
    assert shape(components[item_ref.rsplit("/", 1)[-1]]) == shape(TypeAdapter(ScoreItemIn).json_schema())
    assert response_ref.endswith("/ScoreResponse") and "ScoreResult" in components
    assert operation["security"] == [{"bearer": []}]
    assert schema["paths"]["/get_reward"]["post"]["security"] == [{"bearer": []}]
    # /get_reward reads its own body too (the token is checked first): its body is still documented.
    openrlhf = schema["paths"]["/get_reward"]["post"]["requestBody"]["content"]["application/json"]
    assert openrlhf["schema"]["$ref"].endswith("/OpenRLHFRequest")
    assert set(components["OpenRLHFRequest"]["properties"]) == {"query", "prompts", "labels"}
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
