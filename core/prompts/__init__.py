"""Prompt sources for the generation actors: records (text or chat messages) read from JSONL, Parquet
or `datasets` folders, a deterministic resumable file source, a live Redis stream source, and
`open_prompt_source`, which picks one from the config."""

from typing import Protocol

from core.config import TandemConfig
from core.prompts.file_source import FilePromptSource, PromptCursor
from core.prompts.record import ChatMessage, FieldMap, PromptFileError, PromptRecord, read_prompt_file


class PromptSource(Protocol):
    """What a generation actor reads prompts from. `cursor` is saved as JSON after each pushed batch
    (`cursor.to_dict()`) and assigned back (`PromptCursor.from_dict`) when the actor restarts."""

    cursor: PromptCursor

    def next_batch(self, size: int) -> list[PromptRecord]:
        """Up to `size` prompts (a file source always returns `size`; a stream may return [] when
        nothing arrived in its wait, and the caller calls again)."""
        ...


def prompt_stream_key(config: TandemConfig) -> str:
    """The Redis stream of this run's live prompts."""
    return config.actors.prompt_stream or f"tandem:{config.run.name}:prompts"


def open_prompt_source(config: TandemConfig, shard_index: int, num_shards: int) -> PromptSource:
    """Shard `shard_index` of `num_shards` of the configured training prompts (`actors.prompt_source`)."""
    actors = config.actors
    if actors.prompt_source == "file":
        return FilePromptSource.from_file(
            actors.train_prompts,
            fields=actors.prompt_fields,
            seed=config.run.seed,
            shard_index=shard_index,
            num_shards=num_shards,
        )
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index {shard_index} outside 0..{num_shards - 1}")
    # Imported here: redis is needed only by runs that read a stream.
    from core.prompts.redis_source import RedisPromptSource

    # The consumer group splits the stream between actors; the stable name per shard lets a restarted
    # actor take back what it read but never acknowledged.
    return RedisPromptSource(actors.prompt_redis_url, prompt_stream_key(config), f"actor-{shard_index}")


__all__ = [
    "ChatMessage",
    "FieldMap",
    "FilePromptSource",
    "PromptCursor",
    "PromptFileError",
    "PromptRecord",
    "PromptSource",
    "open_prompt_source",
    "prompt_stream_key",
    "read_prompt_file",
]
