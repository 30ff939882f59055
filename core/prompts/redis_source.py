"""A live prompt source on a Redis stream that an application feeds while a run goes (issue #8).

Layout under the stream key `<stream>` (default `tandem:<run.name>:prompts`):
  <stream>            stream of prompts, one entry each with the field `data` = one JSON object in the
                      format of a prompt file line, e.g. `XADD <stream> * data '{"prompt": "1+1="}'`
                      (`tandem prompts push` does this); read through the consumer group `actors`, so
                      each prompt goes to exactly one of N actors
  <stream>:rejected   list of entries that failed validation, newest first (at most REJECTED_KEPT),
                      each JSON {"id", "fields", "reason"}
  <stream>:counters   hash of event counts: pushed (through `PromptStream.push`; an application's own
                      XADDs are not counted), delivered, rejected

Consumed entries are acknowledged and deleted at once (one MULTI/EXEC right after the read), so the
stream is a queue: its length is what waits plus what is being read. Delivery is at most once for
the usual crash: a prompt read by an actor that dies before pushing its groups is lost (at most the
batches in flight, two with the rollout's pipelining). Only an actor dying between the read and the
acknowledgement, or a read whose reply was lost, leaves entries pending; the same consumer name
(`actor-<shard>`) gets them back on its next read. That trade is fine for prompts, unlike scored
experience: a prompt lost or repeated costs one generation, never a wrong gradient, and keeping
every prompt pending until its groups reach the buffer would tie this source to the rollout loop.

`next_batch` blocks (XREADGROUP BLOCK) until at least one prompt is there, then returns up to `size`
without waiting for more; after `block_s` without any it returns [] so the caller can check for stop,
back-pressure or new weights, and calls again. The cursor only counts the prompts this consumer took
(the stream's position lives in the consumer group on the server); it is a PromptCursor so that the
rollout saves and restores it exactly as a file source's.
"""

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.buffer.redis_buffer import ReportingRetry
from core.prompts.file_source import PromptCursor
from core.prompts.record import PromptFileError, PromptRecord, parse_prompt_line

log = logging.getLogger(__name__)
CONSUMER_GROUP = "actors"
REJECTED_KEPT = 10_000  # enough to diagnose a misbehaving feeder without letting it fill Redis
COUNTERS = ("pushed", "delivered", "rejected")
Entry = tuple[str, dict[bytes, bytes] | None]  # stream id, fields (None: deleted while pending)


@dataclass(frozen=True)
class PromptStreamStats:
    """`length`: entries in the stream; `waiting`: not yet read by any actor; `pending`: read but not
    yet acknowledged (only during a read, or left by an actor that died in it); `rejected`: entries
    kept in the rejected list; `consumers`: consumer names the group has seen."""

    stream: str
    length: int
    waiting: int
    pending: int
    rejected: int
    consumers: int
    counters: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "length": self.length,
            "waiting": self.waiting,
            "pending": self.pending,
            "rejected": self.rejected,
            "consumers": self.consumers,
            "counters": self.counters,
        }


class PromptStream:
    """The stream's keys and connection: pushing, statistics, deletion (what the CLI needs)."""

    def __init__(self, redis_url: str, stream: str, retries: int = 8, socket_timeout_s: float = 30.0):
        self.redis_url = redis_url
        self.stream = stream
        self.rejected_key = f"{stream}:rejected"
        self.counters_key = f"{stream}:counters"
        self.retry = ReportingRetry(retries)
        self.client = redis.Redis.from_url(
            redis_url,
            retry=self.retry,
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            socket_timeout=socket_timeout_s,
            health_check_interval=10,
        )
        self.ensure_group()

    def ensure_group(self) -> None:
        """Create the consumer group from the stream's start, so prompts pushed before any actor
        started are read too (and the stream itself, so stats work on a new one)."""
        try:
            self.client.xgroup_create(self.stream, CONSUMER_GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def push(self, records: list[PromptRecord]) -> int:
        """Append the records in one MULTI/EXEC (all or none). A retry after a lost reply may append
        them twice, which for prompts means generating for them twice: accepted, see the module."""
        if not records:
            return 0
        pipe = self.client.pipeline(transaction=True)
        for record in records:
            pipe.xadd(self.stream, {"data": json.dumps(record.to_dict())})
        pipe.hincrby(self.counters_key, "pushed", len(records))
        pipe.execute()
        return len(records)

    def stats(self) -> PromptStreamStats:
        pipe = self.client.pipeline(transaction=True)  # one consistent snapshot
        pipe.xlen(self.stream)
        pipe.xpending(self.stream, CONSUMER_GROUP)
        pipe.llen(self.rejected_key)
        pipe.xinfo_consumers(self.stream, CONSUMER_GROUP)
        pipe.hgetall(self.counters_key)
        length, pending, rejected, consumers, counters = pipe.execute()
        pending_count = int(pending["pending"])
        merged = {name: 0 for name in COUNTERS} | {k.decode(): int(v) for k, v in counters.items()}
        return PromptStreamStats(
            stream=self.stream,
            length=int(length),
            waiting=int(length) - pending_count,  # consumed entries are deleted (see the module)
            pending=pending_count,
            rejected=int(rejected),
            consumers=len(consumers),
            counters=merged,
        )

    def delete(self) -> None:
        """Remove the stream, its group, rejected list and counters (tests)."""
        self.client.delete(self.stream, self.rejected_key, self.counters_key)

    def close(self) -> None:
        self.client.close()


class RedisPromptSource:
    """Prompts from the stream for one actor; `consumer` names it in the group (`actor-<shard>`), so a
    restarted actor of the same shard gets back entries it read but never acknowledged."""

    def __init__(
        self,
        redis_url: str,
        stream: str,
        consumer: str,
        block_s: float = 5.0,
        retries: int = 8,
        cursor: PromptCursor | None = None,
    ):
        if block_s <= 0:
            raise ValueError(f"block_s must be positive, got {block_s}")
        self.consumer = consumer
        self.block_s = block_s
        # A blocked read must end (after block_s) well before the socket gives up on it.
        self.queue = PromptStream(redis_url, stream, retries, socket_timeout_s=block_s + 30)
        self.cursor = cursor or PromptCursor()
        self.rejected = 0  # entries this source rejected (the server counts all actors' together)

    def next_batch(self, size: int) -> list[PromptRecord]:
        """Up to `size` prompts, in stream order: blocks until at least one is there, then takes what
        else is already waiting; [] after `block_s` without any (call again)."""
        if size < 1:
            raise ValueError(f"batch size must be at least 1, got {size}")
        deadline = time.monotonic() + self.block_s
        records = self._consume(self._read("0", size))  # ours from before a crash or a lost reply
        while len(records) < size:
            if records:
                block_ms = None  # top up with what is already there, never wait with prompts in hand
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                block_ms = max(1, math.ceil(remaining * 1000))  # BLOCK 0 would wait forever
            entries = self._read(">", size - len(records), block_ms)
            if not entries:
                break
            records += self._consume(entries)
        return records

    def _read(self, start: str, count: int, block_ms: int | None = None) -> list[Entry]:
        """XREADGROUP from `start`: `>` new entries, `0` this consumer's pending ones."""
        stream = self.queue.stream
        try:
            reply = self.queue.client.xreadgroup(
                CONSUMER_GROUP, self.consumer, {stream: start}, count=count, block=block_ms
            )
        except ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            # The stream was deleted while the run went on (someone reset it): start a new one.
            log.warning("prompt stream %s lost its consumer group; recreating it", stream)
            self.queue.ensure_group()
            return []
        return [(entry_id.decode(), fields) for _, entries in reply or [] for entry_id, fields in entries]

    def _consume(self, entries: list[Entry]) -> list[PromptRecord]:
        """Validate the entries, then in one MULTI/EXEC acknowledge and delete them all, keep the bad
        ones aside with their reasons and count both."""
        if not entries:
            return []
        records: list[PromptRecord] = []
        rejected: list[str] = []
        for entry_id, fields in entries:
            if fields is None:
                continue  # deleted while pending (the stream was trimmed by hand): nothing to read
            try:
                records.append(self._parse(entry_id, fields))
            except PromptFileError as error:
                log.warning("%s rejected a prompt: %s", self.consumer, error)
                rejected.append(json.dumps({"id": entry_id, "fields": _text(fields), "reason": str(error)}))
        ids = [entry_id for entry_id, _ in entries]
        queue = self.queue
        pipe = queue.client.pipeline(transaction=True)
        pipe.xack(queue.stream, CONSUMER_GROUP, *ids)
        pipe.xdel(queue.stream, *ids)
        pipe.hincrby(queue.counters_key, "delivered", len(records))
        if rejected:
            pipe.lpush(queue.rejected_key, *rejected)
            pipe.ltrim(queue.rejected_key, 0, REJECTED_KEPT - 1)
            pipe.hincrby(queue.counters_key, "rejected", len(rejected))
        pipe.execute()
        self.rejected += len(rejected)
        self.cursor = PromptCursor(self.cursor.epoch, self.cursor.position + len(records))
        return records

    def _parse(self, entry_id: str, fields: dict[bytes, bytes]) -> PromptRecord:
        where = f"{self.queue.stream} entry {entry_id}"
        data = fields.get(b"data")
        if data is None:
            raise PromptFileError(f"{where}: no field 'data' (fields: {sorted(_text(fields))})")
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise PromptFileError(f"{where}: field 'data' is not UTF-8 text") from None
        # Without an explicit prompt_id, the entry id names the prompt: unique across every push.
        return parse_prompt_line(text, where, f"stream-{entry_id}")

    def close(self) -> None:
        self.queue.close()


def _text(fields: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(errors="replace"): v.decode(errors="replace")[:2000] for k, v in fields.items()}


__all__ = ["CONSUMER_GROUP", "PromptStream", "PromptStreamStats", "RedisPromptSource"]
