"""Prompt files in columnar form: Parquet files and Hugging Face `datasets` folders
(`Dataset.save_to_disk`), read from local paths only.

Each row becomes one record by the rules of a JSONL line (core/prompts/record.py), with `row N`
(1-based) where JSONL has a line number: errors read `FILE:row N: field 'prompt' (column 'question')
must be a non-empty string`. A column the field map names explicitly must exist in the file; it is
reported against row 1, where reading stopped, with the columns the file does have. A null value is
an absent field, as Arrow has no other way to leave a field out of one row.

Parquet is read with pyarrow (what `datasets` itself reads it with) rather than `Dataset.from_parquet`,
which would copy the file into the Hugging Face cache on every pre-flight check and actor start.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.prompts.record import FieldMap, PromptFileError, PromptRecord, collect_records, field_label

ROWS_PER_BATCH = 4096  # rows turned into Python objects at a time: bounds the copy of a large file


def read_table_file(path: Path, id_prefix: str, fields: FieldMap) -> list[PromptRecord]:
    """All records of a Parquet file or a `datasets` folder; `fields` maps Tandem's fields to columns."""
    columns, batches = _open_dataset_folder(path) if path.is_dir() else _open_parquet(path)
    _check_mapped_columns(path, columns, fields)
    rows = (
        (number, f"{path}:row {number}", row)
        for number, row in enumerate((row for batch in batches for row in batch), start=1)
    )
    return collect_records(rows, str(path), id_prefix, fields, "row")


def _check_mapped_columns(path: Path, columns: list[str], fields: FieldMap) -> None:
    """Every column the map names is in the file: a misspelt column would otherwise read as an absent
    optional field (every reference gone) or as a prompt missing from row 1 with no hint why."""
    for name, column in fields.items():
        if column not in columns:
            raise PromptFileError(
                f"{path}:row 1: {field_label(name, fields)}: the file has no column {column!r} "
                f"(its columns: {columns})"
            )


def _open_parquet(path: Path) -> tuple[list[str], Iterator[list[dict[str, Any]]]]:
    if not path.is_file():
        raise PromptFileError(f"{path}: prompt file not found")
    import pyarrow
    import pyarrow.parquet

    try:
        parquet = pyarrow.parquet.ParquetFile(path)
    except (pyarrow.ArrowException, OSError) as error:
        raise PromptFileError(f"{path}: cannot read as Parquet ({error})") from None
    columns = list(parquet.schema_arrow.names)
    return columns, (batch.to_pylist() for batch in parquet.iter_batches(batch_size=ROWS_PER_BATCH))


def _open_dataset_folder(path: Path) -> tuple[list[str], Iterator[list[dict[str, Any]]]]:
    import datasets

    try:
        dataset = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as error:
        raise PromptFileError(
            f"{path}: not a Hugging Face datasets folder written by Dataset.save_to_disk ({error})"
        ) from None
    if isinstance(dataset, datasets.DatasetDict):
        splits = sorted(dataset)
        raise PromptFileError(
            f"{path}: holds the splits {splits}, not one dataset: give one split's folder, "
            f"e.g. {path / splits[0]}"
        )
    return list(dataset.column_names), _dataset_rows(dataset)


def _dataset_rows(dataset: Any) -> Iterator[list[dict[str, Any]]]:
    """The dataset's rows in batches of plain Python values (no numpy/torch formatting)."""
    for batch in dataset.with_format(None).iter(batch_size=ROWS_PER_BATCH):
        yield _rows_of(batch)


def _rows_of(batch: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(batch)
    return [dict(zip(names, values, strict=True)) for values in zip(*batch.values(), strict=True)]
