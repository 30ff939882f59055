"""One optimizer step on a TrainBatch, with token-budget micro-batches that give the full-batch gradient.

The losses couple the rows of a group (pairs, leave-one-out baselines), so they cannot be applied to
arbitrary micro-batches. The loss depends on the parameters only through the per-row log-probs, so:
  1. forward every micro-batch without gradients -> logp (all rows);
  2. loss on a leaf copy of logp -> c_i = dLoss/dlogp_i (exact, whole batch, all groups);
  3. forward each micro-batch with gradients and back-propagate sum_i c_i * logp_i.
The accumulated gradient equals the full-batch gradient (chain rule) at the cost of one extra forward
pass, which is skipped when the batch fits one micro-batch.
"""

import math
import time
from collections import Counter
from typing import Any

import torch

from learner import engine as ds
from learner.algorithms import LOSSES
from learner.logprobs import completion_logprobs
from learner.reference import ReferenceModel
from services.config.learner import AlgorithmConfig
from services.schemas import ScoredGroup, TrainBatch


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


def row_keys(batch: TrainBatch) -> list[tuple[str, int]]:
    """(group id, sample index) of each row; rows of a group are contiguous in a TrainBatch."""
    keys, seen = [], Counter[int]()
    for index in batch.group_index.tolist():
        keys.append((batch.group_ids[index], seen[index]))
        seen[index] += 1
    return keys


def plan_micro_batches(batch: TrainBatch, token_budget: int) -> list[torch.Tensor]:
    """Consecutive rows whose padded size (rows x longest row) fits the budget; a longer row goes alone."""
    lengths = batch.attention_mask.sum(dim=1).tolist()
    plans: list[list[int]] = [[]]
    longest = 0
    for row, length in enumerate(lengths):
        if plans[-1] and (len(plans[-1]) + 1) * max(longest, length) > token_budget:
            plans.append([])
            longest = 0
        plans[-1].append(row)
        longest = max(longest, length)
    return [torch.tensor(rows) for rows in plans]


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
) -> dict[str, float]:
    started = time.perf_counter()
    device = engine.device
    ref_logprobs = reference.logprobs(batch, row_keys(batch)).double().to(device)
    rewards, group_index = batch.rewards.to(device), batch.group_index.to(device)
    loss_fn = LOSSES[algorithm.name]
    options = loss_options(algorithm, batch, device)
    micro_batches = plan_micro_batches(batch, token_budget)
    ds.begin_step(engine, len(micro_batches), lr)

    def logprobs_of(rows: torch.Tensor) -> torch.Tensor:
        return completion_logprobs(
            engine,
            batch.input_ids[rows].to(device),
            batch.attention_mask[rows].to(device),
            batch.completion_mask[rows].to(device),
        ).double()

    if len(micro_batches) == 1:
        out = loss_fn(
            logprobs_of(micro_batches[0]),
            ref_logprobs,
            rewards,
            group_index,
            algorithm.beta,
            **options,
        )
        ds.backward(engine, out.loss)
    else:
        with torch.no_grad():
            all_logprobs = torch.cat([logprobs_of(rows) for rows in micro_batches])
        leaf = all_logprobs.clone().requires_grad_(True)
        out = loss_fn(leaf, ref_logprobs, rewards, group_index, algorithm.beta, **options)
        (coefficients,) = torch.autograd.grad(out.loss, leaf)
        for rows in micro_batches:
            ds.backward(engine, (coefficients[rows] * logprobs_of(rows)).sum())
    elapsed = time.perf_counter() - started
    return out.metrics | {
        "grad_norm": ds.grad_norm(engine),
        "lr": lr,
        "micro_batches": float(len(micro_batches)),
        "tokens": float(batch.num_tokens),
        "tokens_per_s": batch.num_tokens / elapsed,
        "step_time_s": elapsed,
    }
