"""One optimizer step on a TrainBatch, with token-budget micro-batches that give the full-batch gradient.

The losses couple the rows of a group (pairs, leave-one-out baselines), so they cannot be applied to
arbitrary micro-batches. The loss depends on the parameters only through the per-row log-probs, so:
  1. forward every micro-batch without gradients -> logp (all rows);
  2. loss on a leaf copy of logp -> c_i = dLoss/dlogp_i (exact, whole batch, all groups);
  3. forward each micro-batch with gradients and back-propagate sum_i c_i * logp_i.
The accumulated gradient equals the full-batch gradient (chain rule) at the cost of one extra forward
pass, which is skipped when the batch fits one micro-batch (its graph is kept through step 2).
With several data-parallel ranks the same holds across ranks: each computes its own rows' log-probs,
step 2 runs on the all-gathered rows of the global batch (see data_parallel.py).
"""

import math
import time
from collections import Counter
from typing import Any

import torch

from core.config.learner import AlgorithmConfig
from core.schemas import ScoredGroup, TrainBatch
from learner import engine as ds
from learner.algorithms import LOSSES
from learner.data_parallel import Shard, gather_rows
from learner.logprobs import completion_logprobs
from learner.reference import ReferenceModel, RowKey


class BadDataError(ValueError):
    """A group the learner must not train on, with `learner.bad_data: error`."""


def screen_groups(
    groups: list[ScoredGroup], stop_on_bad_data: bool
) -> tuple[list[ScoredGroup], Counter[str]]:
    """Drop groups no loss can use, counting why: unscored/non-finite rewards, empty completions, size 1."""
    kept: list[ScoredGroup] = []
    skipped: Counter[str] = Counter()
    for group in groups:
        reason = None
        if not group.all_scored or not all(math.isfinite(r) for r in group.rewards if r is not None):
            reason = "unscored_or_nonfinite_reward"
        elif any(len(sample.completion_token_ids) == 0 for sample in group.samples):
            reason = "empty_completion"
        elif len(group.samples) < 2:
            reason = "group_of_one"
        if reason is None:
            kept.append(group)
            continue
        if stop_on_bad_data:
            raise BadDataError(
                f"group {group.group_id!r}: {reason.replace('_', ' ')} (learner.bad_data: error)"
            )
        skipped[reason] += 1
    return kept, skipped


def row_keys(batch: TrainBatch) -> list[RowKey]:
    """(group id, sample index, hash of the row's tokens) of each row: the reference cache's key.
    The hash keeps rows of groups that share an id apart (ingested offline groups are named by
    source and prompt, so the same prompt ingested twice shares one)."""
    keys: list[RowKey] = []
    seen = Counter[int]()
    lengths = batch.attention_mask.sum(dim=1).tolist()
    for row, (index, length) in enumerate(zip(batch.group_index.tolist(), lengths, strict=True)):
        tokens = batch.input_ids[row, :length].numpy().tobytes()
        keys.append((batch.group_ids[index], seen[index], hash(tokens)))
        seen[index] += 1
    return keys


def plan_micro_batches(
    batch: TrainBatch, token_budget: int, rows: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """Consecutive `rows` (default: all) whose padded size (rows x longest row) fits the budget; a
    longer row goes alone. Returns global row indices."""
    rows = torch.arange(batch.input_ids.shape[0]) if rows is None else rows
    lengths = batch.attention_mask[rows].sum(dim=1).tolist()
    plans: list[list[int]] = [[]]
    longest = 0
    for row, length in zip(rows.tolist(), lengths, strict=True):
        if plans[-1] and (len(plans[-1]) + 1) * max(longest, length) > token_budget:
            plans.append([])
            longest = 0
        plans[-1].append(row)
        longest = max(longest, length)
    return [torch.tensor(plan) for plan in plans if plan]


def loss_options(algorithm: AlgorithmConfig, batch: TrainBatch, device: torch.device) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if algorithm.average_logprobs:
        options |= {"lengths": batch.completion_lengths.to(device), "average_logprobs": True}
    if algorithm.name == "rloo" and algorithm.importance_sampling != "none":
        if bool(torch.isnan(batch.behaviour_logprobs).any()):
            raise BadDataError(
                "rloo with importance sampling needs behaviour log-probs; offline groups lack them"
            )
        options |= {
            "behaviour_logprobs": batch.behaviour_logprobs.double().to(device),
            "importance_sampling": algorithm.importance_sampling,
            "is_cap": algorithm.is_cap,
        }
    return options


def train_step(
    engine: Any,
    reference: ReferenceModel,
    batch: TrainBatch,
    algorithm: AlgorithmConfig,
    token_budget: int,
    lr: float,
    shard: Shard | None = None,
) -> dict[str, float]:
    """One optimizer step on the whole `batch`; with several ranks this rank computes `shard`'s rows
    and the gradient is that of the global loss (data_parallel.py). Metrics are of the whole batch."""
    started = time.perf_counter()
    shard = shard or Shard.whole(batch.input_ids.shape[0])
    device = engine.device
    local = shard.rows()
    keys = row_keys(batch)
    ref_local = reference.logprobs(batch, [keys[row] for row in local.tolist()], local)
    rewards, group_index = batch.rewards.to(device), batch.group_index.to(device)
    loss_fn = LOSSES[algorithm.name]
    options = loss_options(algorithm, batch, device)
    # Every rank makes the same number of backward passes (ZeRO-2 reduces gradients in each, and
    # DeepSpeed steps at a shared accumulation boundary); every rank holds the global batch, so
    # each can plan every rank's micro-batches without asking.
    plans = [plan_micro_batches(batch, token_budget, shard.rows(rank)) for rank in range(shard.world)]
    micro_batches = plans[shard.rank]
    passes = max(len(plan) for plan in plans)
    ds.begin_step(engine, passes, lr)

    def logprobs_of(rows: torch.Tensor) -> torch.Tensor:
        width = int(batch.attention_mask[rows].sum(dim=1).max())  # right-padded: trim the rest
        return completion_logprobs(
            engine,
            batch.input_ids[rows, :width].to(device),
            batch.attention_mask[rows, :width].to(device),
            batch.completion_mask[rows, :width].to(device),
        ).double()

    one_pass = passes == 1 and len(micro_batches) == 1
    if one_pass:  # keep the graph: no second forward pass
        logprobs = logprobs_of(micro_batches[0])
        local_values = logprobs.detach()
    else:
        with torch.no_grad():
            pieces = [logprobs_of(rows) for rows in micro_batches]
            local_values = torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.float64, device=device)
    gathered = gather_rows(torch.stack([local_values, ref_local.to(device)], dim=1), shard)
    leaf = gathered[:, 0].clone().requires_grad_(True)
    out = loss_fn(leaf, gathered[:, 1], rewards, group_index, algorithm.beta, **options)
    (coefficients,) = torch.autograd.grad(out.loss, leaf)
    if not bool(torch.isfinite(out.loss.detach())) or not bool(torch.isfinite(coefficients).all()):
        # The losses check their inputs; a non-finite loss from finite inputs must still never step.
        raise FloatingPointError(f"{algorithm.name} loss {float(out.loss)} or its gradient is not finite")
    coefficients = coefficients * shard.world  # DeepSpeed averages gradients over the ranks
    if one_pass:
        measured = ds.backward(engine, (coefficients[local] * logprobs).sum())
    else:
        for index in range(passes):
            if index < len(micro_batches):
                rows = micro_batches[index]
                measured = ds.backward(engine, (coefficients[rows] * logprobs_of(rows)).sum())
            else:  # this rank has fewer micro-batches: a pass that adds nothing keeps it in step
                measured = ds.backward(engine, 0.0 * logprobs_of(torch.tensor([0])).sum())
    grad_norm = ds.grad_norm(engine, measured)
    if not math.isfinite(grad_norm):
        # Only the backward pass is left to produce it; stop before these weights are published or saved.
        raise FloatingPointError(f"gradient norm {grad_norm} after the step: resume from the last checkpoint")
    elapsed = time.perf_counter() - started
    return out.metrics | {
        "grad_norm": grad_norm,
        "lr": lr,
        "micro_batches": float(passes),
        "tokens": float(batch.num_tokens),
        "tokens_per_s": batch.num_tokens / elapsed,
        "step_time_s": elapsed,
        "ranks": float(shard.world),
    }
