"""Data parallelism inside the learner's torch.distributed group (ranks.py starts the ranks; no Ray here).

Rank 0 (the leader) samples a batch from the buffer and broadcasts it, as msgpack bytes in a uint8
tensor, to every rank; every rank deterministically assigns whole groups to ranks (balancing tokens)
and orders the batch rank by rank, so rank r owns a contiguous block of rows.

Why every rank holds the global batch and evaluates the GLOBAL loss: the losses couple the rows of a
group and normalise over the whole batch (CoPG: mean over groups; RLOO/AGRO: mean over samples).
The mean of per-rank losses is not the batch loss when shards are unequal (2 groups on one rank and 6
on the other weigh 1:3 in the batch, 1:1 in an average of rank means). So each rank computes the
log-probs of its own rows only (the expensive part), the per-row values are all-gathered (two floats
per completion), every rank evaluates the same loss of the whole batch and takes c_i = dL/dlogp_i, and
each rank back-propagates world * sum_{i in its rows} c_i logp_i. DeepSpeed averages gradients over
ranks, so the step sees sum_i c_i grad logp_i = grad L of the whole batch, for any loss and any split.
"""

from dataclasses import dataclass

import msgpack
import torch
import torch.distributed as dist

from core.schemas import ScoredGroup


@dataclass(frozen=True)
class Ranks:
    """Where this process sits in the learner's group; one rank without torch.distributed."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> "Ranks":
        if not dist.is_initialized():
            return cls()
        return cls(dist.get_rank(), dist.get_world_size())

    @property
    def leader(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class Shard:
    """This rank's rows of a TrainBatch ordered rank by rank: `row_counts[r]` rows belong to rank r."""

    rank: int
    row_counts: tuple[int, ...]

    @classmethod
    def whole(cls, rows: int) -> "Shard":
        return cls(0, (rows,))

    @property
    def world(self) -> int:
        return len(self.row_counts)

    def rows(self, rank: int | None = None) -> torch.Tensor:
        """Row indices (into the global batch) of `rank`, by default this one."""
        rank = self.rank if rank is None else rank
        start = sum(self.row_counts[:rank])
        return torch.arange(start, start + self.row_counts[rank])


def share_groups(
    groups: list[ScoredGroup] | None, ranks: Ranks, device: torch.device
) -> list[ScoredGroup] | None:
    """The leader's groups on every rank; None (the leader stops) travels as size -1.

    Records cross as msgpack bytes (ScoredGroup.to_bytes), never pickled, as through the buffer."""
    if ranks.world == 1:
        return groups
    payload = b""
    if ranks.leader:
        payload = b"" if groups is None else msgpack.packb([g.to_bytes() for g in groups], use_bin_type=True)
        size = torch.tensor([-1 if groups is None else len(payload)], dtype=torch.long, device=device)
    else:
        size = torch.zeros(1, dtype=torch.long, device=device)
    dist.broadcast(size, src=0)
    length = int(size.item())
    if length < 0:
        return None
    if ranks.leader:
        data = torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(device)
    else:
        data = torch.empty(length, dtype=torch.uint8, device=device)
    dist.broadcast(data, src=0)
    if ranks.leader:
        return groups
    items = msgpack.unpackb(data.cpu().numpy().tobytes(), raw=False)
    return [ScoredGroup.from_bytes(item) for item in items]


def broadcast_int(value: int, ranks: Ranks, device: torch.device) -> int:
    """The leader's `value` on every rank."""
    if ranks.world == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.long, device=device)
    dist.broadcast(tensor, src=0)
    return int(tensor.item())


def assign_groups(groups: list[ScoredGroup], world: int) -> list[list[int]]:
    """Indices of the groups each rank trains on: whole groups (the losses couple a group's rows),
    largest first to the least loaded rank by tokens. Deterministic, so every rank computes it alike."""
    loads = [0] * world
    assigned: list[list[int]] = [[] for _ in range(world)]
    for index in sorted(range(len(groups)), key=lambda i: (-groups[i].num_tokens, i)):
        rank = min(range(world), key=lambda r: (loads[r], r))
        assigned[rank].append(index)
        loads[rank] += groups[index].num_tokens
    return [sorted(indices) for indices in assigned]


def order_for_ranks(groups: list[ScoredGroup], ranks: Ranks) -> tuple[list[ScoredGroup], Shard]:
    """The groups reordered rank by rank, and this rank's shard of the rows they make."""
    assignment = assign_groups(groups, ranks.world)
    ordered = [groups[index] for indices in assignment for index in indices]
    counts = tuple(sum(len(groups[index].samples) for index in indices) for indices in assignment)
    return ordered, Shard(ranks.rank, counts)


def gather_rows(local: torch.Tensor, shard: Shard) -> torch.Tensor:
    """[this rank's rows, ...] from every rank -> [all rows, ...] in row order (all-gather of blocks
    padded to the largest shard, since the collective needs equal sizes)."""
    if shard.world == 1:
        return local
    width = max(shard.row_counts)
    padded = local.new_zeros((width, *local.shape[1:]))
    padded[: len(local)] = local
    pieces = [torch.empty_like(padded) for _ in range(shard.world)]
    dist.all_gather(pieces, padded)
    return torch.cat([piece[:count] for piece, count in zip(pieces, shard.row_counts, strict=True)])


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
