"""The Redis stream prompt source and `tandem prompts push|stats`, against the running Redis
(127.0.0.1:6379), each test in a stream key of its own."""

import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.config import load_config
from core.prompts import FilePromptSource, PromptCursor, PromptRecord, open_prompt_source
from core.prompts.redis_source import CONSUMER_GROUP, PromptStream, RedisPromptSource
from services.cli import main

REDIS_URL = "redis://127.0.0.1:6379/0"
SourceFactory = Callable[..., RedisPromptSource]


@pytest.fixture
def stream() -> Iterator[PromptStream]:
    queue = PromptStream(REDIS_URL, f"tandem-test-{uuid.uuid4().hex[:10]}:prompts")
    yield queue
    queue.delete()
    queue.close()


@pytest.fixture
def new_source(stream: PromptStream) -> Iterator[SourceFactory]:
    made: list[RedisPromptSource] = []

    def factory(consumer: str = "actor-0", block_s: float = 0.2) -> RedisPromptSource:
        source = RedisPromptSource(REDIS_URL, stream.stream, consumer, block_s=block_s)
        made.append(source)
        return source

    yield factory
    for source in made:
        source.close()


def records(n: int, start: int = 0) -> list[PromptRecord]:
    return [PromptRecord(f"p{i}", f"{i}+1=", str(i + 1)) for i in range(start, start + n)]


def ids(batch: list[PromptRecord]) -> list[str]:
    return [record.prompt_id for record in batch]


def test_push_then_read_in_order_and_empty_after_the_wait(
    stream: PromptStream, new_source: SourceFactory
) -> None:
    source = new_source(block_s=0.6)
    assert stream.push(records(5)) == 5
    first = source.next_batch(3)
    assert ids(first) == ["p0", "p1", "p2"] and first[0] == records(1)[0]  # every field survives
    started = time.monotonic()
    assert ids(source.next_batch(10)) == ["p3", "p4"]  # what is there, without waiting for more
    assert time.monotonic() - started < 0.4
    started = time.monotonic()
    assert source.next_batch(4) == []  # nothing came within block_s: the caller gets control back
    assert 0.55 <= time.monotonic() - started < 3
    stats = stream.stats()
    assert (stats.length, stats.waiting, stats.pending, stats.rejected) == (0, 0, 0, 0)
    assert stats.counters == {"pushed": 5, "delivered": 5, "rejected": 0}
    assert stats.consumers == 1


def test_a_waiting_read_wakes_up_when_a_prompt_arrives(
    stream: PromptStream, new_source: SourceFactory
) -> None:
    source = new_source(block_s=10)  # its constructor creates the group, so the push is not missed
    feeder = threading.Timer(0.3, stream.push, args=(records(2),))
    feeder.start()
    started = time.monotonic()
    batch = source.next_batch(8)
    feeder.join()
    assert ids(batch) == ["p0", "p1"]  # one push is one MULTI/EXEC: both arrive together
    assert 0.2 < time.monotonic() - started < 5


def test_two_actors_split_the_stream_without_overlap(stream: PromptStream, new_source: SourceFactory) -> None:
    stream.push(records(20))
    actors = [new_source("actor-0"), new_source("actor-1")]
    taken: list[list[str]] = [[], []]
    while True:
        batches = [actor.next_batch(3) for actor in actors]
        if not any(batches):
            break
        for index, batch in enumerate(batches):
            taken[index] += ids(batch)
    assert taken[0] and taken[1]
    assert not set(taken[0]) & set(taken[1])
    assert sorted(taken[0] + taken[1]) == sorted(ids(records(20)))
    for part in taken:  # each actor still sees the stream's order
        assert part == sorted(part, key=lambda prompt_id: int(prompt_id[1:]))
    assert actors[0].cursor.position + actors[1].cursor.position == 20
    assert stream.stats().consumers == 2


def test_bad_entries_are_rejected_kept_and_counted_without_crashing(
    stream: PromptStream, new_source: SourceFactory
) -> None:
    client = stream.client
    client.xadd(stream.stream, {"data": "{oops"})
    client.xadd(stream.stream, {"data": json.dumps({"prompt": "1+1=", "prompt_id": "good-1"})})
    client.xadd(stream.stream, {"prompt": "1+1="})  # no `data` field
    client.xadd(stream.stream, {"data": json.dumps({"prompt": "x", "answer": "y"})})
    client.xadd(stream.stream, {"data": json.dumps(["not", "an", "object"])})
    no_id = client.xadd(stream.stream, {"data": json.dumps({"prompt": "2+2=", "reference": "4"})}).decode()
    source = new_source()
    batch = source.next_batch(10)
    assert ids(batch) == ["good-1", f"stream-{no_id}"]  # no prompt_id: named after its entry
    assert batch[1].reference == "4"
    assert source.rejected == 4
    stats = stream.stats()
    assert (stats.length, stats.rejected, stats.counters["rejected"], stats.counters["delivered"]) == (
        0, 4, 4, 2,
    )  # fmt: skip
    kept = [json.loads(item) for item in reversed(client.lrange(stream.rejected_key, 0, -1))]
    assert [item["fields"] for item in kept][1] == {"prompt": "1+1="}
    reasons = [item["reason"] for item in kept]
    assert reasons[0].startswith(f"{stream.stream} entry {kept[0]['id']}: not valid JSON")
    assert "no field 'data'" in reasons[1]
    assert "unknown field(s) ['answer']" in reasons[2]
    assert "expected a JSON object, got list" in reasons[3]


def test_a_batch_of_only_bad_entries_does_not_end_the_wait(
    stream: PromptStream, new_source: SourceFactory
) -> None:
    source = new_source(block_s=5)
    stream.client.xadd(stream.stream, {"data": "[]"})
    threading.Timer(0.3, stream.push, args=(records(1),)).start()
    assert ids(source.next_batch(4)) == ["p0"]  # not [] right after the rejected entry
    assert source.rejected == 1


def test_cursor_round_trips_through_json_and_keeps_counting(
    stream: PromptStream, new_source: SourceFactory
) -> None:
    stream.push(records(5))
    first = new_source("actor-0")
    first.next_batch(3)
    saved = json.dumps(first.cursor.to_dict())
    restarted = new_source("actor-0")
    restarted.cursor = PromptCursor.from_dict(json.loads(saved))  # as the rollout loop restores it
    assert ids(restarted.next_batch(5)) == ["p3", "p4"]
    assert restarted.cursor == PromptCursor(epoch=0, position=5)


def test_entries_read_but_never_acknowledged_come_back_to_the_same_consumer(
    stream: PromptStream, new_source: SourceFactory
) -> None:
    stream.push(records(4))
    # An actor that died between its read and the acknowledgement leaves these pending for itself.
    stream.client.xreadgroup(CONSUMER_GROUP, "actor-0", {stream.stream: ">"}, count=2)
    assert stream.stats().pending == 2
    assert ids(new_source("actor-1").next_batch(5)) == ["p2", "p3"]  # not another consumer's
    assert ids(new_source("actor-0").next_batch(5)) == ["p0", "p1"]
    assert stream.stats().pending == 0


def test_a_stream_deleted_under_a_running_source_is_recreated(
    stream: PromptStream, new_source: SourceFactory
) -> None:
    source = new_source()
    stream.delete()
    assert source.next_batch(2) == []  # logged, group recreated; no crash
    stream.push(records(1))
    assert ids(source.next_batch(2)) == ["p0"]


def test_bad_arguments_are_refused(stream: PromptStream) -> None:
    with pytest.raises(ValueError, match="block_s must be positive, got 0"):
        RedisPromptSource(REDIS_URL, stream.stream, "actor-0", block_s=0)
    source = RedisPromptSource(REDIS_URL, stream.stream, "actor-0")
    with pytest.raises(ValueError, match="batch size must be at least 1, got 0"):
        source.next_batch(0)
    source.close()


def test_open_prompt_source_follows_the_config(stream: PromptStream, tmp_path: Path) -> None:
    config = load_config(overrides=["actors.prompt_source=redis", f"actors.prompt_stream={stream.stream}"])
    source = open_prompt_source(config, shard_index=1, num_shards=2)
    assert isinstance(source, RedisPromptSource)
    assert (source.consumer, source.queue.stream) == ("actor-1", stream.stream)
    source.close()
    named = load_config(overrides=["actors.prompt_source=redis", "run.name=demo7"])
    source = open_prompt_source(named, shard_index=0, num_shards=1)
    assert isinstance(source, RedisPromptSource) and source.queue.stream == "tandem:demo7:prompts"
    source.queue.delete()
    source.close()
    with pytest.raises(ValueError, match=r"shard_index 2 outside 0\.\.1"):
        open_prompt_source(config, shard_index=2, num_shards=2)
    # A prompt file of its own: the default path exists only once some test has built the tiny model.
    prompts = tmp_path / "train.jsonl"
    prompts.write_text(json.dumps({"prompt": "1+1=", "reference": "2"}) + "\n")
    file_config = load_config(overrides=[f"actors.train_prompts={prompts}"])
    assert isinstance(open_prompt_source(file_config, 0, 1), FilePromptSource)


def test_cli_push_from_stdin_then_stats(
    stream: PromptStream,
    new_source: SourceFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = [{"prompt": "1+1=", "reference": "2"}, {"prompt": "2+2=", "prompt_id": "mine"}]
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(json.dumps(line) + "\n" for line in lines)))
    where = ["--set", "actors.prompt_source=redis", "--set", f"actors.prompt_stream={stream.stream}"]
    assert main(["prompts", "push", "-", *where]) == 0
    assert f"-: 2 prompts pushed to {REDIS_URL} {stream.stream}" in capsys.readouterr().out
    assert main(["prompts", "stats", "--json", *where]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["length"], stats["waiting"], stats["counters"]["pushed"]) == (2, 2, 2)
    batch = new_source().next_batch(5)
    assert ids(batch) == ["stdin-1", "mine"] and batch[0].reference == "2"
    assert main(["prompts", "stats", *where]) == 0
    table = capsys.readouterr().out
    assert "length       0" in table and "delivered  2" in table


def test_cli_push_of_a_bad_file_names_the_line_and_pushes_nothing(
    stream: PromptStream, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "1+1="}\n{"prompt": ""}\n{"prompt": "3+3="}\n')
    where = ["--set", f"actors.prompt_stream={stream.stream}"]
    assert main(["prompts", "push", str(bad), *where]) == 2
    error = capsys.readouterr().err
    assert f"{bad}:2: field 'prompt' must be a non-empty string; nothing pushed" in error
    assert stream.stats().length == 0 and stream.stats().counters["pushed"] == 0
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "1+1="}\n')
    assert main(["prompts", "push", str(good), "--id-prefix", "batch7", *where]) == 0
    assert "actors.prompt_source is 'file'" in capsys.readouterr().err  # pushing where no actor reads
    assert [json.loads(fields[b"data"]) for _, fields in stream.client.xrange(stream.stream)] == [
        {"prompt_id": "batch7-1", "prompt": "1+1="}
    ]
