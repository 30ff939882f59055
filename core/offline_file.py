"""The offline JSONL format of `tandem ingest` and `buffer.offline_files`: parsing and validation.

Each line: {"prompt": str, "completions": [str, ...], "rewards": [number, ...]?, "reference": str?,
"prompt_id": str?, "policy_version": int? (default 0), "source": str? (default "offline"),
"prompt_token_ids": [int]?, "completion_token_ids": [[int], ...]?, "truncated": bool | [bool, ...]?},
where a chat prompt gives "messages": [{"role": str, "content": str}, ...] instead of "prompt" (the
policy's chat template renders it, as the actors do). Errors name the file, line and field.
Tokenised completions end with EOS, as an actor's sample that ended on its own does, unless marked
`truncated` (cut off before their end: no EOS); a list marks each completion. Numbers must fit what
the pipeline stores: finite float rewards, and a `policy_version` below 2**63 (the learner's int64
tensors).

Standard library and `core.prompts.record` (the rules for chat messages) only, not `core.buffer`
(whose package imports torch through the wire records): `tandem train` checks every offline line
here before anything heavy starts (preflight), and `core.buffer.ingest` turns the parsed lines into
groups.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

from core.prompts.record import ChatMessage, messages_problem


class IngestError(ValueError):
    """A line that cannot become an off-policy group; the message names the file, line and field."""


@dataclass(frozen=True)
class OfflineLine:
    where: str  # "FILE:LINE", for messages
    prompt_id: str
    prompt: str | None  # None: a chat prompt, in `messages`
    completions: list[str]
    rewards: list[float] | None
    reference: str | None
    policy_version: int
    source: str
    prompt_token_ids: list[int] | None
    completion_token_ids: list[list[int]] | None
    truncated: list[bool] | None = None  # per completion: cut off before its end (no EOS); None: none
    messages: list[ChatMessage] | None = None  # a chat prompt, rendered by the policy's chat template


_FIELDS = {
    "prompt", "completions", "rewards", "reference", "prompt_id", "policy_version", "source",
    "prompt_token_ids", "completion_token_ids", "truncated", "messages",
}  # fmt: skip
MAX_POLICY_VERSION = 2**63 - 1  # the learner keeps versions in int64 tensors


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

    prompt, completions, messages = data.get("prompt"), data.get("completions"), data.get("messages")
    if prompt is not None and messages is not None:
        raise IngestError(f"{where}: give field 'prompt' or field 'messages', not both")
    if messages is None and (not isinstance(prompt, str) or not prompt):
        raise fail("prompt", "a non-empty string")
    problem = messages_problem(messages) if messages is not None else None
    if problem is not None:
        raise fail("messages", problem)
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
        if not all(_is_finite(r) for r in rewards):
            raise fail("rewards", "a list of finite numbers (within a float's range)")
    version = data.get("policy_version", 0)
    if not _is_int(version) or not 0 <= version <= MAX_POLICY_VERSION:
        raise fail("policy_version", "a non-negative integer below 2**63")
    truncated = data.get("truncated", False)
    if isinstance(truncated, bool):
        truncated = [truncated] * len(completions)
    elif not (
        isinstance(truncated, list)
        and len(truncated) == len(completions)
        and all(isinstance(flag, bool) for flag in truncated)
    ):
        raise fail("truncated", "true, false, or one boolean per completion")
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
        truncated=truncated if any(truncated) else None,
        messages=[{"role": m["role"], "content": m["content"]} for m in messages] if messages else None,
    )


def _is_text(value: object) -> bool:
    return isinstance(value, str)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_finite(value: object) -> bool:
    """A number that is a finite float: a 400-digit integer is a number JSON allows and float() refuses."""
    if not is_number(value):
        return False
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except OverflowError:
        return False


def _is_token_ids(values: object) -> bool:
    return isinstance(values, list) and all(_is_int(v) and 0 <= v < 2**31 for v in values)
