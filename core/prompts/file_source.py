"""A dataset-file prompt source: deterministic for a seed, epoch-aware, sharded, resumable from a cursor.

Epoch e visits the records in the order of a permutation seeded by (seed, e); shard i of n takes every
n-th position of that order, so n actors cover an epoch exactly once between them. The cursor
(epoch, position) is all the state there is: a restarted actor or a resumed run continues exactly.
"""

import random
from dataclasses import dataclass
from pathlib import Path

from core.prompts.record import FieldMap, PromptRecord, read_prompt_file


@dataclass(frozen=True)
class PromptCursor:
    """Where a shard stands: the epoch and the next position in this shard's part of the epoch."""

    epoch: int = 0
    position: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> "PromptCursor":
        return cls(epoch=int(data["epoch"]), position=int(data["position"]))


class FilePromptSource:
    def __init__(
        self,
        records: list[PromptRecord],
        seed: int = 0,
        shard_index: int = 0,
        num_shards: int = 1,
        cursor: PromptCursor | None = None,
    ):
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"shard_index {shard_index} outside 0..{num_shards - 1}")
        if len(records) < num_shards:
            raise ValueError(f"{len(records)} prompts cannot be split into {num_shards} shards")
        self.records = records
        self.seed = seed
        self.shard_index = shard_index
        self.num_shards = num_shards
        self.cursor = cursor or PromptCursor()
        self._order_epoch = -1
        self._order: list[int] = []

    @classmethod
    def from_file(cls, path: Path, fields: FieldMap | None = None, **kwargs: object) -> "FilePromptSource":
        """The records of a prompt file in any format `read_prompt_file` reads, columns mapped by `fields`."""
        return cls(read_prompt_file(path, fields=fields), **kwargs)  # type: ignore[arg-type]

    def next_batch(self, size: int) -> list[PromptRecord]:
        """The next `size` prompts of this shard, crossing into the next epoch when one ends."""
        batch: list[PromptRecord] = []
        while len(batch) < size:
            order = self._shard_order(self.cursor.epoch)
            if self.cursor.position >= len(order):
                self.cursor = PromptCursor(self.cursor.epoch + 1, 0)
                continue
            batch.append(self.records[order[self.cursor.position]])
            self.cursor = PromptCursor(self.cursor.epoch, self.cursor.position + 1)
        return batch

    def _shard_order(self, epoch: int) -> list[int]:
        if epoch != self._order_epoch:
            order = list(range(len(self.records)))
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
            self._order = order[self.shard_index :: self.num_shards]
            self._order_epoch = epoch
        return self._order
