"""The file prompt source: deterministic, epoch-aware, sharded without overlap, resumable, strict input."""

import json
from pathlib import Path

import pytest

from core.prompts import FilePromptSource, PromptCursor, PromptFileError, PromptRecord, read_prompt_file


def records(n: int) -> list[PromptRecord]:
    return [PromptRecord(f"p{i}", f"{i}+1=", str(i + 1)) for i in range(n)]


def ids(batch: list[PromptRecord]) -> list[str]:
    return [record.prompt_id for record in batch]


def test_same_seed_same_order_other_seed_other_order() -> None:
    first = ids(FilePromptSource(records(50), seed=1).next_batch(50))
    assert first == ids(FilePromptSource(records(50), seed=1).next_batch(50))
    assert first != ids(FilePromptSource(records(50), seed=2).next_batch(50))
    assert sorted(first) == sorted(ids(records(50)))  # one epoch is a permutation


def test_epochs_visit_everything_once_in_a_new_order() -> None:
    source = FilePromptSource(records(10), seed=0)
    epoch0, epoch1 = ids(source.next_batch(10)), ids(source.next_batch(10))
    assert sorted(epoch0) == sorted(epoch1) and epoch0 != epoch1
    assert source.cursor == PromptCursor(epoch=1, position=10)
    source.next_batch(1)
    assert source.cursor == PromptCursor(epoch=2, position=1)


def test_shards_partition_an_epoch() -> None:
    shards = [FilePromptSource(records(9), seed=3, shard_index=i, num_shards=3) for i in range(3)]
    seen = [prompt for shard in shards for prompt in ids(shard.next_batch(3))]
    assert sorted(seen) == sorted(ids(records(9)))


def test_resume_from_cursor_continues_exactly() -> None:
    whole = ids(FilePromptSource(records(7), seed=5).next_batch(20))
    first = FilePromptSource(records(7), seed=5)
    head = ids(first.next_batch(9))
    cursor = PromptCursor.from_dict(first.cursor.to_dict())
    tail = ids(FilePromptSource(records(7), seed=5, cursor=cursor).next_batch(11))
    assert head + tail == whole


def test_file_reading_and_clear_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(
        json.dumps({"prompt": "1+1=", "reference": "2"}) + "\n\n" + json.dumps({"prompt": "x"}) + "\n"
    )
    loaded = read_prompt_file(good)
    assert [r.prompt_id for r in loaded] == ["good-1", "good-3"] and loaded[0].reference == "2"
    cases = {
        '{"prompt": ""}': "good2.jsonl:1: field 'prompt' must be a non-empty string",
        '{"prompt": "a", "tests": "assert x"}': "field 'tests' must be a list of strings",
        '{"prompt": "a", "answer": "b"}': "unknown field(s) ['answer']",
        "[1, 2]": "expected a JSON object",
        "{oops": "not valid JSON",
    }
    for line, message in cases.items():
        bad = tmp_path / "good2.jsonl"
        bad.write_text(line + "\n")
        with pytest.raises(
            PromptFileError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
        ):
            read_prompt_file(bad)
    duplicate = tmp_path / "dup.jsonl"
    duplicate.write_text('{"prompt": "a", "prompt_id": "x"}\n{"prompt": "b", "prompt_id": "x"}\n')
    with pytest.raises(PromptFileError, match=r"dup\.jsonl:2: prompt_id 'x' repeats line 1"):
        read_prompt_file(duplicate)


def test_bad_sharding_is_refused() -> None:
    with pytest.raises(ValueError, match=r"shard_index 3 outside 0\.\.2"):
        FilePromptSource(records(5), shard_index=3, num_shards=3)
    with pytest.raises(ValueError, match="2 prompts cannot be split into 3 shards"):
        FilePromptSource(records(2), shard_index=0, num_shards=3)
