"""Shared pieces of the losses: input checks, grouping, leave-one-out baselines, sequence log-probs,
the averaging operator and the metrics every loss reports.

Everything is vectorised over groups of mixed sizes: a batch is N completions with integer group ids,
`torch.unique(..., return_inverse=True)` maps them to contiguous indices 0..G-1, and per-group sums are
`index_add`s, so no Python loop runs over samples or groups.
"""

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

Normaliser = Literal["groups", "samples"]
"""What a loss averages over at the top level: `groups` (CoPG: the mean over groups of each group's
pair mean) or `samples` (RLOO, AGRO: the mean over completions). Inside that mean every term depends
on the rows of its own group only, which is what lets the learner cut a batch at group boundaries."""


@dataclass(frozen=True)
class LossOutput:
    """A scalar loss to minimise and float metrics (loss, reward_mean, reward_std, kl, num_groups, ...)."""

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Groups:
    """The group structure of a batch: `index[i]` in 0..G-1 for completion i, `sizes[g]` = k_g >= 2."""

    index: torch.Tensor
    sizes: torch.Tensor

    @property
    def count(self) -> int:
        return int(self.sizes.numel())

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Per-group sums, shape [G] (differentiable: `index_add` passes gradients through)."""
        zeros = torch.zeros(self.count, dtype=values.dtype, device=values.device)
        return zeros.index_add(0, self.index, values)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Per-group means, shape [G]."""
        return self.sum(values) / self.sizes.to(values.dtype)

    def leave_one_out_mean(self, values: torch.Tensor) -> torch.Tensor:
        """b_i = mean_{j != i, same group} values_j = (S_g - v_i) / (k_g - 1), shape [N]."""
        sizes = self.sizes.to(values.dtype)[self.index]
        return (self.sum(values)[self.index] - values) / (sizes - 1)


def batch_share(
    normaliser: Normaliser, group_ids: torch.Tensor, batch_groups: int, batch_samples: int
) -> float:
    """The fraction of the whole batch's loss that a set of WHOLE groups (`group_ids`, one per row)
    carries: the loss of those rows alone times this is their term of the batch loss, because each loss
    is a mean over groups or samples of per-group terms. Counts of the whole batch are known before any
    forward pass (they depend on the batch's make-up, not on log-probs)."""
    if normaliser == "groups":
        return int(torch.unique(group_ids).numel()) / batch_groups
    return int(group_ids.numel()) / batch_samples


def find_groups(group_ids: torch.Tensor, loss_name: str) -> Groups:
    """Map arbitrary integer group ids to 0..G-1; every group needs at least two completions
    (a leave-one-out baseline or a pair needs a second sample of the same prompt)."""
    unique_ids, index, sizes = torch.unique(group_ids, return_inverse=True, return_counts=True)
    too_small = sizes < 2
    if bool(too_small.any()):
        small = unique_ids[too_small].tolist()
        raise ValueError(
            f"{loss_name}: groups need at least 2 completions of the same prompt; "
            f"group id(s) {small[:5]} have 1"
        )
    return Groups(index=index, sizes=sizes)


def check_inputs(
    loss_name: str,
    tensors: dict[str, torch.Tensor | None],
    beta: float,
    beta_must_be_positive: bool,
) -> int:
    """1-D, equal lengths, integer group ids, finite rewards and log-probs, valid beta; returns N.

    Every message starts with the loss's name and names the offending input."""
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not math.isfinite(beta):
        raise ValueError(f"{loss_name}: beta must be a finite number, got {beta!r}")
    if beta_must_be_positive and beta <= 0:
        # CoPG divides by beta and AGRO's fixed point pi_ref exp(r / beta) / Z needs beta > 0.
        raise ValueError(
            f"{loss_name}: beta must be > 0 (the loss targets pi_ref exp(r / beta) / Z), got {beta}"
        )
    if beta < 0:
        raise ValueError(f"{loss_name}: beta must be >= 0, got {beta}")
    present = {name: tensor for name, tensor in tensors.items() if tensor is not None}
    for name, tensor in present.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{loss_name}: {name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dim() != 1:
            raise ValueError(
                f"{loss_name}: {name} must be 1-D (one entry per completion), got shape {tuple(tensor.shape)}"
            )
    shapes = {name: tuple(tensor.shape) for name, tensor in present.items()}
    if len(set(shapes.values())) != 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"{loss_name}: inputs differ in length: {listed}")
    n = next(iter(shapes.values()))[0]
    if n == 0:
        raise ValueError(f"{loss_name}: empty batch")
    group_ids = present["group_ids"]
    if group_ids.dtype.is_floating_point or group_ids.dtype.is_complex or group_ids.dtype == torch.bool:
        raise ValueError(f"{loss_name}: group_ids must be an integer tensor, got {group_ids.dtype}")
    for name in ("rewards", "logprobs", "ref_logprobs", "behaviour_logprobs", "sampling_logprobs"):
        tensor = present.get(name)
        if tensor is None:
            continue
        finite = torch.isfinite(tensor.detach())
        if not bool(finite.all()):  # one reduction on the happy path; find the indices only on failure
            bad = (~finite).nonzero().flatten()
            raise ValueError(f"{loss_name}: {name} has non-finite values at index {bad[:5].tolist()}")
    return n


def compute_dtype(logprobs: torch.Tensor) -> torch.dtype:
    """float32 or wider: bf16/fp16 log-probs of long completions lose whole nats, and CoPG squares them."""
    return torch.promote_types(logprobs.dtype, torch.float32)


def apply_averaging(
    loss_name: str,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    lengths: torch.Tensor | None,
    average_logprobs: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The averaging operator (Grinsztajn et al. 2024, arXiv 2406.19188, which replaces log pi(y|x) by
    (1/|y|) log pi(y|x) in the alignment loss): per-token means instead of sums.

    It makes the loss invariant to completion length but changes the fixed point (it is no longer pi* for
    the summed KL), so it is off by default."""
    if not average_logprobs:
        return logprobs, ref_logprobs
    if lengths is None:
        raise ValueError(f"{loss_name}: average_logprobs=True needs `lengths` (completion tokens per row)")
    non_positive = lengths <= 0
    if bool(non_positive.any()):
        raise ValueError(
            f"{loss_name}: lengths must be positive, got {lengths[non_positive][:5].tolist()} "
            f"at index {non_positive.nonzero().flatten()[:5].tolist()}"
        )
    divisor = lengths.to(logprobs.dtype)
    return logprobs / divisor, ref_logprobs / divisor


def sequence_logprobs(token_logprobs: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """log pi(y|x) = sum over completion tokens of log pi(y_t | x, y_<t), accumulated in float32 or wider.

    token_logprobs: [B, T] log-probs of the tokens at each position; completion_mask: [B, T] bool or 0/1
    (True on completion tokens). Returns [B]. Prompt and padding positions contribute nothing, even if
    their log-probs are -inf (masked with `where`, not multiplied: -inf * 0 is NaN).
    """
    if token_logprobs.shape != completion_mask.shape:
        raise ValueError(
            f"token_logprobs {tuple(token_logprobs.shape)} and "
            f"completion_mask {tuple(completion_mask.shape)} differ"
        )
    accumulate = compute_dtype(token_logprobs)
    masked = torch.where(completion_mask.bool(), token_logprobs.to(accumulate), 0.0)
    return masked.sum(dim=-1)


def reward_metrics(
    rewards: torch.Tensor, log_ratio: torch.Tensor, loss: torch.Tensor, groups: Groups
) -> dict[str, float]:
    """The metrics every loss reports; kl is the sample mean of h = log pi - log pi_ref (a KL estimate
    only for on-policy samples)."""
    rewards = rewards.detach().double()
    return {
        "loss": float(loss.detach()),
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std(unbiased=False)),
        "kl": float(log_ratio.detach().double().mean()),
        "num_groups": float(groups.count),
        "num_samples": float(rewards.numel()),
    }
