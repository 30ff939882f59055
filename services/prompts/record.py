"""One prompt as read from a JSONL file, validated line by line with errors that name the line and field."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class PromptFileError(ValueError):
    """A prompt file that cannot be used; the message names the file, the line and the field."""


@dataclass(frozen=True)
class PromptRecord:
    """A prompt and what scorers may check its completions against."""

    prompt_id: str
    prompt: str
    reference: str | None = None
    tests: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


_KNOWN_FIELDS = {"prompt_id", "prompt", "reference", "tests", "metadata"}


def read_prompt_file(path: Path) -> list[PromptRecord]:
    """All records of a JSONL prompt file; `prompt_id` defaults to `<file stem>-<line number>`."""
    if not path.is_file():
        raise PromptFileError(f"{path}: prompt file not found")
    records: list[PromptRecord] = []
    seen: dict[str, int] = {}
    with path.open() as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            record = _parse_line(path, number, line)
            if record.prompt_id in seen:
                raise PromptFileError(
                    f"{path}:{number}: prompt_id {record.prompt_id!r} repeats line {seen[record.prompt_id]}"
                )
            seen[record.prompt_id] = number
            records.append(record)
    if not records:
        raise PromptFileError(f"{path}: no prompts")
    return records


def _parse_line(path: Path, number: int, line: str) -> PromptRecord:
    where = f"{path}:{number}"
    try:
        data = json.loads(line)
    except json.JSONDecodeError as error:
        raise PromptFileError(f"{where}: not valid JSON ({error.msg})") from None
    if not isinstance(data, dict):
        raise PromptFileError(f"{where}: expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - _KNOWN_FIELDS)
    if unknown:
        raise PromptFileError(f"{where}: unknown field(s) {unknown}; known: {sorted(_KNOWN_FIELDS)}")
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise PromptFileError(f"{where}: field 'prompt' must be a non-empty string")
    reference = data.get("reference")
    if reference is not None and not isinstance(reference, str):
        raise PromptFileError(f"{where}: field 'reference' must be a string")
    tests = data.get("tests")
    if tests is not None and (not isinstance(tests, list) or not all(isinstance(t, str) for t in tests)):
        raise PromptFileError(f"{where}: field 'tests' must be a list of strings")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise PromptFileError(f"{where}: field 'metadata' must be an object")
    prompt_id = str(data.get("prompt_id") or f"{path.stem}-{number}")
    return PromptRecord(prompt_id, prompt, reference, tests, metadata)
