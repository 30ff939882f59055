"""Offline data into the buffer: `tandem ingest FILE.jsonl`.

Each line: {"prompt": str, "completions": [str, ...], "rewards": [number, ...]?, "reference": str?,
"prompt_id": str?, "policy_version": int? (default 0), "source": str? (default "offline"),
"prompt_token_ids": [int]?, "completion_token_ids": [[int], ...]?}. Lines without token ids are
tokenised (`--tokenizer`); lines without rewards are scored by the reward server (`POST /v1/score`,
batched across lines), and an item it fails to score fails the ingest (never a silent 0).
Behaviour log-probs are unknown for offline data (None). The whole file is parsed, tokenised and
scored before anything is written, then written in one transaction: a malformed line (reported with
its number and field) leaves the buffer untouched.
"""

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.schemas import Sample, ScoredGroup

Tokenize = Callable[[str], list[int]]
# items [{"prompt", "completion", "reference"}] -> results [{"reward", "status", "scores", "error"}]
Score = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
SCORE_BATCH = 256  # completions per reward-server request


class IngestError(ValueError):
    """A line that cannot become an off-policy group; the message names the file, line and field."""


@dataclass(frozen=True)
class OfflineLine:
    where: str  # "FILE:LINE", for messages
    prompt_id: str
    prompt: str
    completions: list[str]
    rewards: list[float] | None
    reference: str | None
    policy_version: int
    source: str
    prompt_token_ids: list[int] | None
    completion_token_ids: list[list[int]] | None


_FIELDS = {
    "prompt", "completions", "rewards", "reference", "prompt_id", "policy_version", "source",
    "prompt_token_ids", "completion_token_ids",
}  # fmt: skip


def parse_offline_file(path: Path) -> list[OfflineLine]:
    """Every line validated, or an IngestError naming the first bad line and field."""
    if not path.is_file():
        raise IngestError(f"{path}: file not found")
    lines = []
    with path.open() as handle:
        for number, text in enumerate(handle, start=1):
            if text.strip():
                lines.append(_parse_line(f"{path}:{number}", f"{path.stem}-{number}", text))
    if not lines:
        raise IngestError(f"{path}: no groups")
    return lines


def _parse_line(where: str, default_id: str, text: str) -> OfflineLine:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise IngestError(f"{where}: not valid JSON ({error.msg})") from None
    if not isinstance(data, dict):
        raise IngestError(f"{where}: expected a JSON object")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise IngestError(f"{where}: unknown field(s) {unknown}")

    def fail(field: str, expected: str) -> IngestError:
        return IngestError(f"{where}: field '{field}' must be {expected}")

    prompt, completions = data.get("prompt"), data.get("completions")
    if not isinstance(prompt, str) or not prompt:
        raise fail("prompt", "a non-empty string")
    if (
        not isinstance(completions, list)
        or len(completions) < 2
        or not all(isinstance(c, str) for c in completions)
    ):
        raise fail("completions", "a list of at least 2 strings")
    rewards = data.get("rewards")
    if rewards is not None:
        if not isinstance(rewards, list) or len(rewards) != len(completions):
            raise fail("rewards", "a list with one number per completion")
        if not all(_is_number(r) and math.isfinite(r) for r in rewards):
            raise fail("rewards", "a list of finite numbers")
    version = data.get("policy_version", 0)
    if not _is_int(version) or version < 0:
        raise fail("policy_version", "a non-negative integer")
    for field in ("reference", "prompt_id", "source"):
        if data.get(field) is not None and (not isinstance(data[field], str) or not data[field]):
            raise fail(field, "a non-empty string")
    prompt_ids, completion_ids = data.get("prompt_token_ids"), data.get("completion_token_ids")
    if (prompt_ids is None) != (completion_ids is None):
        raise IngestError(f"{where}: give both 'prompt_token_ids' and 'completion_token_ids', or neither")
    if prompt_ids is not None and not _is_token_ids(prompt_ids):
        raise fail("prompt_token_ids", "a list of non-negative integers")
    if completion_ids is not None and (
        not isinstance(completion_ids, list)
        or len(completion_ids) != len(completions)
        or not all(_is_token_ids(ids) and ids for ids in completion_ids)
    ):
        raise fail("completion_token_ids", "one non-empty list of non-negative integers per completion")
    return OfflineLine(
        where=where,
        prompt_id=data.get("prompt_id") or default_id,
        prompt=prompt,
        completions=completions,
        rewards=[float(r) for r in rewards] if rewards is not None else None,
        reference=data.get("reference"),
        policy_version=version,
        source=data.get("source") or "offline",
        prompt_token_ids=prompt_ids,
        completion_token_ids=completion_ids,
    )


def _is_text(value: object) -> bool:
    return isinstance(value, str)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_token_ids(values: object) -> bool:
    return isinstance(values, list) and all(_is_int(v) and 0 <= v < 2**31 for v in values)


def build_offline_groups(
    lines: list[OfflineLine], tokenize: Tokenize | None, score: Score | None
) -> list[ScoredGroup]:
    """Tokenise and score every line (all or nothing); what is missing fails before any request."""
    for line in lines:
        if line.rewards is None and score is None:
            raise IngestError(f"{line.where}: field 'rewards' missing and no --reward-url to score it")
    token_ids = [_token_ids(line, tokenize) for line in lines]
    scored = _score_unrewarded(lines, score) if score is not None else {}
    groups = []
    for line, (prompt_ids, completion_ids) in zip(lines, token_ids, strict=True):
        rewards, details = scored.get(line.where) or (line.rewards or [], [{} for _ in line.completions])
        now = time.time()
        samples = [
            Sample(line.prompt_id, prompt_ids, ids, text, None, "offline", line.policy_version, "ingest", now)
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


def _token_ids(line: OfflineLine, tokenize: Tokenize | None) -> tuple[list[int], list[list[int]]]:
    if line.prompt_token_ids is not None and line.completion_token_ids is not None:
        return line.prompt_token_ids, line.completion_token_ids
    if tokenize is None:
        raise IngestError(f"{line.where}: no 'prompt_token_ids' in the line and no --tokenizer given")
    return tokenize(line.prompt), [tokenize(completion) for completion in line.completions]


def _score_unrewarded(
    lines: list[OfflineLine], score: Score
) -> dict[str, tuple[list[float], list[dict[str, float]]]]:
    """Rewards and per-scorer details of the lines without rewards, keyed by `where`."""
    items = [
        (line, index) for line in lines if line.rewards is None for index in range(len(line.completions))
    ]
    results: list[dict[str, Any]] = []
    for start in range(0, len(items), SCORE_BATCH):
        chunk = items[start : start + SCORE_BATCH]
        request = [
            {"prompt": line.prompt, "completion": line.completions[i], "reference": line.reference}
            for line, i in chunk
        ]
        reply = score(request)
        if len(reply) != len(request):
            raise IngestError(f"the reward server answered {len(reply)} results for {len(request)} items")
        results += reply
    scored: dict[str, tuple[list[float], list[dict[str, float]]]] = {}
    for (line, index), result in zip(items, results, strict=True):
        if result.get("status") != "ok" or not _is_number(result.get("reward")):
            raise IngestError(
                f"{line.where}: the reward server failed completion {index}: "
                f"{result.get('status')} {result.get('error')}"
            )
        rewards, details = scored.setdefault(line.where, ([], []))
        rewards.append(float(result["reward"]))
        details.append({k: float(v) for k, v in (result.get("scores") or {}).items()})
    return scored


def hf_tokenizer(directory: Path) -> Tokenize:
    """Tokenize with the Hugging Face tokenizer in `directory` (no special tokens added)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    return lambda text: list(tokenizer.encode(text, add_special_tokens=False))


def http_scorer(base_url: str, token: str | None = None) -> Score:
    """Score items through a reward server's `POST /v1/score`; a transport failure is an IngestError."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = httpx.Client(base_url=base_url, timeout=120, headers=headers)

    def score(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            response = client.post("/v1/score", json={"items": items})
            response.raise_for_status()
            return response.json()["results"]
        except (httpx.HTTPError, ValueError, KeyError) as error:
            raise IngestError(f"reward server {base_url}/v1/score: {error!r}") from None

    return score
