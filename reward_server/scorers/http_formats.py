"""Request bodies and response parsing for the `http` scorer's three wire formats.

tandem    POST {"items": [...]} to a /v1/score endpoint; per-item results keep their own status.
openrlhf  POST {"query": [prompt + completion], "prompts", "labels"}; `rewards[i]` null = failed.
template  one POST per item from `request_template` ({prompt}, {completion}, {reference} are filled
          in string values); the reward is read at the dotted `response_path`.
"""

import math
import re
from collections.abc import Sequence
from typing import Any

from reward_server.scorers.base import ScoreItem, ScorerResult, ScoreStatus

PLACEHOLDER = re.compile(r"\{(prompt|completion|reference)\}")


class ResponseFormatError(ValueError):
    """The endpoint answered, but not in the configured format."""


def tandem_body(items: Sequence[ScoreItem]) -> dict[str, Any]:
    return {
        "items": [
            {
                "prompt": item.prompt,
                "completion": item.completion,
                "reference": item.reference,
                "tests": item.tests,
                "metadata": item.metadata,
            }
            for item in items
        ]
    }


def tandem_results(body: Any, count: int) -> list[ScorerResult]:
    results = _list_at(body, "results", count)
    return [_tandem_result(result) for result in results]


def _tandem_result(result: Any) -> ScorerResult:
    if not isinstance(result, dict):
        raise ResponseFormatError(f"a result is {type(result).__name__}, not an object")
    status: ScoreStatus | None = result.get("status")
    if status not in ("ok", "error", "timeout"):
        raise ResponseFormatError(f"a result has status {status!r}, not ok, error or timeout")
    if status != "ok":
        return ScorerResult.failed(f"remote {status}: {result.get('error')}", status)
    return as_reward(result.get("reward"), "reward")


def openrlhf_body(items: Sequence[ScoreItem]) -> dict[str, Any]:
    return {
        "query": [item.prompt + item.completion for item in items],
        "prompts": [item.prompt for item in items],
        # A missing reference is sent as null, not "": the remote must not score against an empty label.
        "labels": [item.reference for item in items],
    }


def openrlhf_results(body: Any, count: int) -> list[ScorerResult]:
    rewards = _list_at(body, "rewards", count)
    errors = body.get("errors") if isinstance(body.get("errors"), list) else [None] * count
    return [
        as_reward(reward, "rewards") if reward is not None else ScorerResult.failed(f"remote error: {error}")
        for reward, error in zip(rewards, errors + [None] * (count - len(errors)), strict=False)
    ]


def template_body(template: Any, item: ScoreItem) -> Any:
    """The template with placeholders filled in every string value, in one pass (so a completion that
    contains "{reference}" is sent as written, not expanded)."""
    values = {"prompt": item.prompt, "completion": item.completion, "reference": item.reference or ""}
    if isinstance(template, str):
        return PLACEHOLDER.sub(lambda match: values[match.group(1)], template)
    if isinstance(template, dict):
        return {key: template_body(value, item) for key, value in template.items()}
    if isinstance(template, list):
        return [template_body(value, item) for value in template]
    return template


def value_at(body: Any, path: str) -> Any:
    """Follow a dotted path through objects (keys) and lists (integer indices): `data.0.score`."""
    value = body
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            raise ResponseFormatError(f"response has nothing at {path!r} (stopped at {part!r})")
    return value


def as_reward(value: Any, where: str) -> ScorerResult:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return ScorerResult.failed(f"remote {where} is {value!r}, not a number")
    if not math.isfinite(value):
        return ScorerResult.failed(f"remote {where} is not finite ({value})")
    return ScorerResult.ok(float(value))


def _list_at(body: Any, key: str, count: int) -> list[Any]:
    values = body.get(key) if isinstance(body, dict) else None
    if not isinstance(values, list):
        raise ResponseFormatError(f"response has no {key!r} list")
    if len(values) != count:
        raise ResponseFormatError(f"response has {len(values)} {key} for {count} items")
    return values
