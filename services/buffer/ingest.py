"""Offline data into the buffer: `tandem ingest FILE.jsonl`.

Each line: {"prompt": str, "completions": [str, ...], "rewards": [float, ...]?, "reference": str?,
"prompt_id": str?, "policy_version": int? (default 0), "source": str? (default "offline"),
"prompt_token_ids": [int]?, "completions_token_ids": [[int]]?}. Lines without rewards are scored by
the reward server (`POST /v1/score`); an item the server fails to score fails the ingest (no silent 0).
The whole file is parsed, tokenised and scored before anything is written, and then written in one
transaction: a malformed line (reported with its number and field) leaves the buffer untouched.
"""

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.schemas import Sample, ScoredGroup

Tokenize = Callable[[str], list[int]]
Score = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


class IngestError(ValueError):
    """A line that cannot become an off-policy group; the message names the file, line and field."""


@dataclass(frozen=True)
class OfflineLine:
    number: int
    prompt_id: str
    prompt: str
    completions: list[str]
    rewards: list[float] | None
    reference: str | None
    policy_version: int
    source: str
    prompt_token_ids: list[int] | None
    completions_token_ids: list[list[int]] | None


_FIELDS = {
    "prompt", "completions", "rewards", "reference", "prompt_id", "policy_version", "source",
    "prompt_token_ids", "completions_token_ids",
}  # fmt: skip


def parse_offline_file(path: Path) -> list[OfflineLine]:
    if not path.is_file():
        raise IngestError(f"{path}: file not found")
    lines = []
    with path.open() as handle:
        for number, text in enumerate(handle, start=1):
            if text.strip():
                lines.append(_parse_line(path, number, text))
    if not lines:
        raise IngestError(f"{path}: no groups")
    return lines


def _parse_line(path: Path, number: int, text: str) -> OfflineLine:
    where = f"{path}:{number}"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise IngestError(f"{where}: not valid JSON ({error.msg})") from None
    if not isinstance(data, dict):
        raise IngestError(f"{where}: expected a JSON object")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise IngestError(f"{where}: unknown field(s) {unknown}")
    prompt, completions = data.get("prompt"), data.get("completions")
    if not isinstance(prompt, str) or not prompt:
        raise IngestError(f"{where}: field 'prompt' must be a non-empty string")
    if (
        not isinstance(completions, list)
        or len(completions) < 2
        or not all(isinstance(c, str) for c in completions)
    ):
        raise IngestError(f"{where}: field 'completions' must be a list of at least 2 strings")
    rewards = data.get("rewards")
    if rewards is not None:
        if not isinstance(rewards, list) or len(rewards) != len(completions):
            raise IngestError(f"{where}: field 'rewards' must be a list with one number per completion")
        if not all(
            isinstance(r, int | float) and not isinstance(r, bool) and math.isfinite(r) for r in rewards
        ):
            raise IngestError(f"{where}: field 'rewards' must hold finite numbers")
    version = data.get("policy_version", 0)
    if not isinstance(version, int) or version < 0:
        raise IngestError(f"{where}: field 'policy_version' must be a non-negative integer")
    prompt_ids, completion_ids = data.get("prompt_token_ids"), data.get("completions_token_ids")
    if (prompt_ids is None) != (completion_ids is None):
        raise IngestError(f"{where}: give both 'prompt_token_ids' and 'completions_token_ids', or neither")
    if completion_ids is not None and len(completion_ids) != len(completions):
        raise IngestError(f"{where}: field 'completions_token_ids' needs one list per completion")
    return OfflineLine(
        number=number,
        prompt_id=str(data.get("prompt_id") or f"{path.stem}-{number}"),
        prompt=prompt,
        completions=completions,
        rewards=[float(r) for r in rewards] if rewards is not None else None,
        reference=data.get("reference"),
        policy_version=version,
        source=str(data.get("source") or "offline"),
        prompt_token_ids=prompt_ids,
        completions_token_ids=completion_ids,
    )


def build_offline_groups(
    path: Path, lines: list[OfflineLine], tokenize: Tokenize | None, score: Score | None
) -> list[ScoredGroup]:
    """Tokenise and score every line (all or nothing)."""
    groups = []
    for line in lines:
        where = f"{path}:{line.number}"
        if line.prompt_token_ids is None and tokenize is None:
            raise IngestError(f"{where}: no token ids in the line and no --tokenizer given")
        prompt_ids = line.prompt_token_ids if line.prompt_token_ids is not None else tokenize(line.prompt)  # type: ignore[misc]
        completion_ids = line.completions_token_ids or [tokenize(c) for c in line.completions]  # type: ignore[misc]
        rewards = line.rewards
        details: list[dict[str, float]] = [{} for _ in line.completions]
        if rewards is None:
            if score is None:
                raise IngestError(
                    f"{where}: field 'rewards' missing and no --reward-url to score the completions"
                )
            rewards, details = _scored(where, line, score)
        samples = [
            Sample(
                line.prompt_id,
                prompt_ids,
                ids,
                text,
                None,
                "offline",
                line.policy_version,
                "ingest",
                time.time(),
            )
            for text, ids in zip(line.completions, completion_ids, strict=True)
        ]
        groups.append(
            ScoredGroup(
                group_id=f"{line.source}:{line.prompt_id}",
                prompt=line.prompt,
                prompt_token_ids=prompt_ids,
                samples=samples,
                rewards=list(rewards),
                reward_status=["ok"] * len(samples),
                reward_details=details,
                source=line.source,
                reference=line.reference,
            )
        )
    return groups


def _scored(where: str, line: OfflineLine, score: Score) -> tuple[list[float], list[dict[str, float]]]:
    items = [{"prompt": line.prompt, "completion": c, "reference": line.reference} for c in line.completions]
    results = score(items)
    failed = [(i, r) for i, r in enumerate(results) if r.get("status") != "ok" or r.get("reward") is None]
    if failed:
        index, result = failed[0]
        raise IngestError(
            f"{where}: the reward server failed completion {index}: "
            f"{result.get('status')} {result.get('error')}"
        )
    return [float(r["reward"]) for r in results], [dict(r.get("scores") or {}) for r in results]
