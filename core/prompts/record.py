"""One prompt as read from a JSONL file or a Redis stream entry, validated with errors that name the
source, the line (or entry) and the field."""

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class PromptFileError(ValueError):
    """A prompt that cannot be used; the message names the file (or stream entry), the line and the field."""


@dataclass(frozen=True)
class PromptRecord:
    """A prompt and what scorers may check its completions against."""

    prompt_id: str
    prompt: str
    reference: str | None = None
    tests: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object a prompt file line holds for this record (unset optional fields left out)."""
        data: dict[str, Any] = {"prompt_id": self.prompt_id, "prompt": self.prompt}
        if self.reference is not None:
            data["reference"] = self.reference
        if self.tests is not None:
            data["tests"] = self.tests
        if self.metadata:
            data["metadata"] = self.metadata
        return data


_KNOWN_FIELDS = {"prompt_id", "prompt", "reference", "tests", "metadata"}


def read_prompt_file(path: Path, id_prefix: str | None = None) -> list[PromptRecord]:
    """All records of a JSONL prompt file; `prompt_id` defaults to `<id_prefix>-<line number>`, the
    prefix to the file's stem."""
    if not path.is_file():
        raise PromptFileError(f"{path}: prompt file not found")
    with path.open() as handle:
        return read_prompt_lines(handle, str(path), id_prefix or path.stem)


def read_prompt_lines(lines: Iterable[str], name: str, id_prefix: str) -> list[PromptRecord]:
    """All records of JSONL text read from `name` (a path, `<stdin>`); blank lines are skipped, a
    `prompt_id` repeated within the text is an error, and a missing one is `<id_prefix>-<line number>`."""
    records: list[PromptRecord] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = parse_prompt_line(line, f"{name}:{number}", f"{id_prefix}-{number}")
        if record.prompt_id in seen:
            raise PromptFileError(
                f"{name}:{number}: prompt_id {record.prompt_id!r} repeats line {seen[record.prompt_id]}"
            )
        seen[record.prompt_id] = number
        records.append(record)
    if not records:
        raise PromptFileError(f"{name}: no prompts")
    return records


def parse_prompt_line(line: str, where: str, default_id: str) -> PromptRecord:
    """One JSON object of text; `where` prefixes every error message (e.g. `prompts.jsonl:3`)."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as error:
        raise PromptFileError(f"{where}: not valid JSON ({error.msg})") from None
    return parse_prompt_object(data, where, default_id)


def parse_prompt_object(data: object, where: str, default_id: str) -> PromptRecord:
    """A decoded JSON value as a record, checked field by field; `prompt_id` defaults to `default_id`."""
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
    prompt_id = str(data.get("prompt_id") or default_id)
    return PromptRecord(prompt_id, prompt, reference, tests, metadata)
