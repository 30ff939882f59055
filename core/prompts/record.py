"""One prompt as read from a prompt file (JSONL, Parquet, a `datasets` folder) or a Redis stream entry,
validated with errors that name the source, the line or row (or entry) and the field.

A record holds either a text `prompt` or chat `messages` (a list of `{role, content}`), which the
policy's chat template renders later (core/tokenization.py), when the tokenizer is at hand.

A field map (`actors.prompt_fields`, `tandem prompts push --field`) names the file's column for each
of Tandem's fields, e.g. `{prompt: question, reference: answer}`; unnamed fields keep their own names.
Without a map an unknown field is an error (a misspelt `refrence` would otherwise drop every
reference unseen); with one, the file's other columns are ignored, since a dataset's extra columns
(ids, levels, sources) are what a map is for.
"""

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class PromptFileError(ValueError):
    """A prompt that cannot be used; the message names the file (or stream entry), the line and the field."""


ChatMessage = dict[str, str]  # {"role": ..., "content": ...}
FieldMap = Mapping[str, str]  # Tandem field -> the file's column
KNOWN_FIELDS = ("prompt_id", "prompt", "messages", "reference", "tests", "metadata")
_MESSAGE_KEYS = frozenset({"role", "content"})


@dataclass(frozen=True)
class PromptRecord:
    """A prompt (text, or chat messages for the chat template) and what scorers may check its
    completions against. Exactly one of `prompt` and `messages` is set."""

    prompt_id: str
    prompt: str | None
    reference: str | None = None
    tests: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    messages: list[ChatMessage] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object a prompt file line holds for this record (unset optional fields left out)."""
        data: dict[str, Any] = {"prompt_id": self.prompt_id}
        if self.prompt is not None:
            data["prompt"] = self.prompt
        if self.messages is not None:
            data["messages"] = self.messages
        if self.reference is not None:
            data["reference"] = self.reference
        if self.tests is not None:
            data["tests"] = self.tests
        if self.metadata:
            data["metadata"] = self.metadata
        return data


def check_field_map(fields: FieldMap | None) -> dict[str, str]:
    """The map as a plain dict, or a ValueError naming the first field Tandem does not know or the
    first column that is not a non-empty string."""
    checked: dict[str, str] = {}
    for name, column in (fields or {}).items():
        if name not in KNOWN_FIELDS:
            raise ValueError(f"unknown prompt field {name!r}; known: {list(KNOWN_FIELDS)}")
        if not isinstance(column, str) or not column:
            raise ValueError(f"prompt field {name!r}: the column must be a non-empty string")
        checked[name] = column
    return checked


def read_prompt_file(
    path: Path, id_prefix: str | None = None, fields: FieldMap | None = None
) -> list[PromptRecord]:
    """All records of a prompt file: a `datasets` folder (`Dataset.save_to_disk`), a Parquet file
    (`.parquet`, `.pq`), or else JSONL. `prompt_id` defaults to `<id_prefix>-<line or row number>`,
    the prefix to the file's stem (a folder's name)."""
    fields = check_field_map(fields)
    if path.is_dir() or path.suffix.lower() in (".parquet", ".pq"):
        # Imported here: pyarrow and datasets cost a second to import, and JSONL needs neither.
        from core.prompts.table_file import read_table_file

        return read_table_file(path, id_prefix or path.name.removesuffix(path.suffix), fields)
    if not path.is_file():
        raise PromptFileError(f"{path}: prompt file not found")
    with path.open() as handle:
        return read_prompt_lines(handle, str(path), id_prefix or path.stem, fields)


def read_prompt_lines(
    lines: Iterable[str], name: str, id_prefix: str, fields: FieldMap | None = None
) -> list[PromptRecord]:
    """All records of JSONL text read from `name` (a path, `<stdin>`); blank lines are skipped, a
    `prompt_id` repeated within the text is an error, and a missing one is `<id_prefix>-<line number>`."""
    fields = check_field_map(fields)
    numbered = (
        (number, f"{name}:{number}", _decode_line(line, f"{name}:{number}"))
        for number, line in enumerate(lines, start=1)
        if line.strip()
    )
    return collect_records(numbered, name, id_prefix, fields, "line")


def collect_records(
    rows: Iterable[tuple[int, str, object]], name: str, id_prefix: str, fields: FieldMap, unit: str
) -> list[PromptRecord]:
    """Records of decoded (number, where, value) rows; a repeated `prompt_id` names both `unit`s
    (line, row), and a missing one is `<id_prefix>-<number>`."""
    records: list[PromptRecord] = []
    seen: dict[str, int] = {}
    for number, where, data in rows:
        record = parse_prompt_object(data, where, f"{id_prefix}-{number}", fields)
        if record.prompt_id in seen:
            raise PromptFileError(
                f"{where}: prompt_id {record.prompt_id!r} repeats {unit} {seen[record.prompt_id]}"
            )
        seen[record.prompt_id] = number
        records.append(record)
    if not records:
        raise PromptFileError(f"{name}: no prompts")
    return records


def parse_prompt_line(line: str, where: str, default_id: str) -> PromptRecord:
    """One JSON object of text; `where` prefixes every error message (e.g. `prompts.jsonl:3`)."""
    return parse_prompt_object(_decode_line(line, where), where, default_id)


def _decode_line(line: str, where: str) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise PromptFileError(f"{where}: not valid JSON ({error.msg})") from None


def parse_prompt_object(
    data: object, where: str, default_id: str, fields: FieldMap | None = None
) -> PromptRecord:
    """A decoded JSON value (or a table row) as a record, checked field by field; `fields` maps
    Tandem's fields to the row's keys; `prompt_id` defaults to `default_id`."""
    if not isinstance(data, dict):
        raise PromptFileError(f"{where}: expected a JSON object, got {type(data).__name__}")
    if not fields:
        unknown = sorted(set(data) - set(KNOWN_FIELDS))
        if unknown:
            raise PromptFileError(f"{where}: unknown field(s) {unknown}; known: {sorted(KNOWN_FIELDS)}")
    fields = fields or {}
    values = {name: data.get(fields.get(name, name)) for name in KNOWN_FIELDS}

    def fail(name: str, expected: str) -> PromptFileError:
        return PromptFileError(f"{where}: {field_label(name, fields)} must be {expected}")

    prompt, messages = values["prompt"], values["messages"]
    if prompt is not None and messages is not None:
        raise PromptFileError(
            f"{where}: give {field_label('prompt', fields)} or {field_label('messages', fields)}, not both"
        )
    if messages is None and (not isinstance(prompt, str) or not prompt):
        raise fail("prompt", "a non-empty string")
    if messages is not None:
        problem = messages_problem(messages)
        if problem is not None:
            raise fail("messages", problem)
    reference = values["reference"]
    if reference is not None and not isinstance(reference, str):
        raise fail("reference", "a string")
    tests = values["tests"]
    if tests is not None and (not isinstance(tests, list) or not all(isinstance(t, str) for t in tests)):
        raise fail("tests", "a list of strings")
    metadata = values["metadata"] or {}
    if not isinstance(metadata, dict):
        raise fail("metadata", "an object")
    prompt_id = str(values["prompt_id"] or default_id)
    chat = _clean_messages(messages) if messages is not None else None
    return PromptRecord(prompt_id, prompt, reference, tests, metadata, chat)


def field_label(name: str, fields: FieldMap) -> str:
    """`field 'prompt'`, with the file's column when the map renames it: `field 'prompt' (column 'q')`."""
    column = fields.get(name, name)
    return f"field {name!r}" if column == name else f"field {name!r} (column {column!r})"


def messages_problem(messages: object) -> str | None:
    """What is wrong with a `messages` value (the end of "field 'messages' must be ..."), or None."""
    expected = "a non-empty list of {role, content} objects with string values"
    if not isinstance(messages, list) or not messages:
        return expected
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"{expected} (message {index} is {type(message).__name__})"
        # A Parquet/Arrow list of structs carries every key of the struct type on every message,
        # the absent ones as null: only keys that hold a value count.
        keys = {key for key, value in message.items() if value is not None}
        if keys != _MESSAGE_KEYS:
            return f"{expected} (message {index} has keys {sorted(keys)})"
        role, content = message["role"], message["content"]
        if not isinstance(role, str) or not role or not isinstance(content, str):
            return f"{expected} (message {index}: role a non-empty string, content a string)"
    return None


def _clean_messages(messages: list[dict[str, Any]]) -> list[ChatMessage]:
    """Only role and content: the null keys an Arrow struct adds would reach the chat template."""
    return [{"role": message["role"], "content": message["content"]} for message in messages]


def scoring_metadata(metadata: dict[str, Any], messages: list[ChatMessage] | None) -> dict[str, Any]:
    """The `metadata` a reward item carries: the record's, plus a chat prompt's `messages`.

    A chat prompt reaches the reward server as its rendered text in `prompt` (what the policy saw, so
    `prompt + completion` is the whole conversation for a reward model) and as the messages in
    `metadata["messages"]`, for scorers that want the turns rather than the template's text."""
    return metadata if messages is None else {**metadata, "messages": messages}
