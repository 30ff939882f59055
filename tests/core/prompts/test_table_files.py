"""Prompt files as Parquet and `datasets` folders, with a field map: the same records as JSONL, and
errors that name the file, the row and the field (and the column a map renames it to)."""

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import datasets
import pyarrow
import pyarrow.parquet
import pytest

from core.config import ConfigError, load_config
from core.prompts import FilePromptSource, PromptFileError, open_prompt_source, read_prompt_file
from core.prompts.redis_source import PromptStream
from services.cli import main
from services.orchestration.preflight import PreflightError, check_prompt_file

REDIS_URL = "redis://127.0.0.1:6379/0"
# The same three prompts in Tandem's field names, as a JSONL file holds them.
RECORDS = [
    {"prompt_id": "a", "prompt": "1+1=", "reference": "2", "metadata": {"level": 1}},
    {
        "prompt_id": "b",
        "prompt": "2+2=",
        "reference": "4",
        "tests": ["assert True"],
        "metadata": {"level": 2},
    },
    {"prompt_id": "c", "messages": [{"role": "user", "content": "3+3="}], "reference": "6"},
]
# A dataset's own column names for them, and the map back to Tandem's.
COLUMNS = {"prompt_id": "id", "prompt": "question", "messages": "chat", "reference": "answer"}
FIELDS = dict(COLUMNS)


def renamed(record: dict) -> dict:
    """A record's row in the dataset's columns, every column present (Arrow has no absent field)."""
    row = {COLUMNS.get(name, name): record.get(name) for name in (*COLUMNS, "tests", "metadata")}
    row["source"] = "made-up"  # a column the map does not name: ignored
    return row


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), path)
    return path


def write_dataset(path: Path, rows: list[dict]) -> Path:
    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


def escaped(message: str) -> str:
    return re.escape(message)


def test_parquet_and_datasets_folder_with_renamed_columns_load_as_the_jsonl(tmp_path: Path) -> None:
    expected = read_prompt_file(write_jsonl(tmp_path / "p.jsonl", RECORDS))
    rows = [renamed(record) for record in RECORDS]
    from_parquet = read_prompt_file(write_parquet(tmp_path / "p.parquet", rows), fields=FIELDS)
    from_folder = read_prompt_file(write_dataset(tmp_path / "p", rows), fields=FIELDS)
    assert from_parquet == expected and from_folder == expected
    assert expected[2].messages == [{"role": "user", "content": "3+3="}] and expected[2].prompt is None


def test_identity_map_and_default_ids_by_row(tmp_path: Path) -> None:
    rows = [{"prompt": "1+1=", "reference": "2"}, {"prompt": "2+2=", "reference": None}]
    records = read_prompt_file(write_parquet(tmp_path / "set.parquet", rows))
    assert [(r.prompt_id, r.prompt, r.reference) for r in records] == [
        ("set-1", "1+1=", "2"),
        ("set-2", "2+2=", None),  # a null is an absent field
    ]
    folder = read_prompt_file(write_dataset(tmp_path / "folder", rows))
    assert [r.prompt_id for r in folder] == ["folder-1", "folder-2"]


def test_a_wrong_map_a_missing_column_and_a_bad_value_name_file_row_and_field(tmp_path: Path) -> None:
    rows = [renamed(record) for record in RECORDS]
    parquet = write_parquet(tmp_path / "p.parquet", rows)
    with pytest.raises(PromptFileError, match=escaped(f"{parquet}:row 1: field 'prompt' (column 'quest')")):
        read_prompt_file(parquet, fields=FIELDS | {"prompt": "quest"})  # a misspelt column
    # Without a map, the dataset's own names are unknown fields.
    with pytest.raises(PromptFileError, match=escaped(f"{parquet}:row 1: unknown field(s) ['answer',")):
        read_prompt_file(parquet)
    folder = write_dataset(tmp_path / "bad", [rows[0], dict(rows[1], question="")])
    with pytest.raises(
        PromptFileError,
        match=escaped(f"{folder}:row 2: field 'prompt' (column 'question') must be a non-empty string"),
    ):
        read_prompt_file(folder, fields=FIELDS)
    numbers = write_parquet(tmp_path / "n.parquet", [rows[0], rows[1], dict(rows[2], answer=None)])
    table = pyarrow.parquet.read_table(numbers).set_column(3, "answer", pyarrow.array([2, 4, 6]))
    pyarrow.parquet.write_table(table, numbers)
    with pytest.raises(
        PromptFileError,
        match=escaped(f"{numbers}:row 1: field 'reference' (column 'answer') must be a string"),
    ):
        read_prompt_file(numbers, fields=FIELDS)
    # A column for `prompt` that holds messages: both given in one row.
    both = write_parquet(
        tmp_path / "both.parquet", [{"prompt": "x", "messages": [{"role": "user", "content": "x"}]}]
    )
    with pytest.raises(
        PromptFileError, match=escaped(f"{both}:row 1: give field 'prompt' or field 'messages'")
    ):
        read_prompt_file(both)


def test_unknown_fields_in_a_map_and_files_that_are_not_tables(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown prompt field 'question'"):
        read_prompt_file(tmp_path / "x.jsonl", fields={"question": "prompt"})
    not_parquet = tmp_path / "x.parquet"
    not_parquet.write_text("{}")
    with pytest.raises(PromptFileError, match=escaped(f"{not_parquet}: cannot read as Parquet")):
        read_prompt_file(not_parquet)
    with pytest.raises(
        PromptFileError, match=escaped(f"{tmp_path / 'missing.parquet'}: prompt file not found")
    ):
        read_prompt_file(tmp_path / "missing.parquet")
    empty_folder = tmp_path / "empty"
    empty_folder.mkdir()
    with pytest.raises(PromptFileError, match="not a Hugging Face datasets folder"):
        read_prompt_file(empty_folder)
    splits = tmp_path / "splits"
    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"prompt": "x"}])}).save_to_disk(str(splits))
    with pytest.raises(PromptFileError, match=escaped(f"give one split's folder, e.g. {splits / 'train'}")):
        read_prompt_file(splits)
    assert [r.prompt for r in read_prompt_file(splits / "train")] == ["x"]


def test_a_map_renames_jsonl_fields_too(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", [{"question": "1+1=", "answer": "2", "extra": 1}])
    [record] = read_prompt_file(path, fields={"prompt": "question", "reference": "answer"})
    assert (record.prompt_id, record.prompt, record.reference) == ("q-1", "1+1=", "2")
    with pytest.raises(PromptFileError, match=escaped(f"{path}:1: field 'prompt' (column 'q')")):
        read_prompt_file(path, fields={"prompt": "q"})


def test_config_map_reaches_the_file_source_and_preflight(tmp_path: Path) -> None:
    rows = [renamed(record) for record in RECORDS[:2]]
    parquet = write_parquet(tmp_path / "train.parquet", rows)
    overrides = [f"actors.train_prompts={parquet}"] + [
        f"actors.prompt_fields.{field}={column}" for field, column in FIELDS.items()
    ]
    config = load_config(overrides=overrides)
    assert config.actors.prompt_fields == FIELDS
    source = open_prompt_source(config, 0, 1)
    assert isinstance(source, FilePromptSource) and sorted(r.prompt_id for r in source.records) == ["a", "b"]
    assert check_prompt_file(parquet, "actors.train_prompts", fields=FIELDS) == 2
    with pytest.raises(
        PreflightError, match=escaped(f"actors.train_prompts: {parquet}:row 1: unknown field(s)")
    ):
        check_prompt_file(parquet, "actors.train_prompts")  # the dataset's names, no map
    with pytest.raises(ConfigError, match="prompt_fields"):
        load_config(overrides=["actors.prompt_fields.question=prompt"])


@pytest.fixture
def stream() -> Iterator[PromptStream]:
    queue = PromptStream(REDIS_URL, f"tandem-test-{uuid.uuid4().hex[:10]}:prompts")
    yield queue
    queue.delete()
    queue.close()


def test_prompts_push_reads_parquet_with_a_map(
    stream: PromptStream, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parquet = write_parquet(tmp_path / "live.parquet", [renamed(record) for record in RECORDS[:2]])
    where = ["--set", "actors.prompt_source=redis", "--set", f"actors.prompt_stream={stream.stream}"]
    fields = [arg for field, column in FIELDS.items() for arg in ("--field", f"{field}={column}")]
    assert main(["prompts", "push", str(parquet), *where]) == 2  # no map: the dataset's names are unknown
    assert "unknown field(s)" in capsys.readouterr().err and stream.stats().length == 0
    assert main(["prompts", "push", str(parquet), *fields, *where]) == 0
    assert f"{parquet}: 2 prompts pushed" in capsys.readouterr().out
    pushed = [json.loads(fields[b"data"]) for _, fields in stream.client.xrange(stream.stream)]
    assert pushed == RECORDS[:2]  # Tandem's own names on the stream
    # The config's map works as well, and a --field overrides one of its fields.
    config_map = [
        arg for field, column in FIELDS.items() for arg in ("--set", f"actors.prompt_fields.{field}={column}")
    ]
    assert main(["prompts", "push", str(parquet), *config_map, "--field", "prompt=nope", *where]) == 2
    assert f"{parquet}:row 1: field 'prompt' (column 'nope')" in capsys.readouterr().err
    assert main(["prompts", "push", str(parquet), "--field", "prompt", *where]) == 2
    assert "expected FIELD=COLUMN" in capsys.readouterr().err
