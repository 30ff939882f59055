"""Shared pieces of the losses: input checks, grouping, leave-one-out baselines, sequence log-probs.

Everything is vectorised over groups of mixed sizes: a batch is N completions with integer group ids,
`torch.unique(..., return_inverse=True)` maps them to 0..G-1, and per-group sums are `index_add_`s.
"""

import math
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class LossOutput:
    """A scalar loss to minimise and float metrics (reward_mean, reward_std, kl, loss, ...)."""

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Groups:
    """The group structure of a batch: `index[i]` in 0..G-1 for completion i, `sizes[g]` = k_g."""

    index: torch.Tensor
    sizes: torch.Tensor

    @property
    def count(self) -> int:
        return int(self.sizes.numel())

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Per-group sums, shape [G]."""
        return torch.zeros(self.count, dtype=values.dtype, device=values.device).index_add_(
            0, self.index, values
        )

    def leave_one_out_mean(self, values: torch.Tensor) -> torch.Tensor:
        """b_i = mean_{j != i, same group} values_j, shape [N] (groups have k >= 2)."""
        sizes = self.sizes.to(values.dtype)[self.index]
        return (self.sum(values)[self.index] - values) / (sizes - 1)


def find_groups(group_ids: torch.Tensor, loss_name: str) -> Groups:
    """Map arbitrary integer group ids to 0..G-1; every group needs at least two completions."""
    _, index, sizes = torch.unique(group_ids, return_inverse=True, return_counts=True)
    if bool((sizes < 2).any()):
        unique_ids = torch.unique(group_ids)
        small = unique_ids[sizes < 2].tolist()
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
    """1-D, equal lengths, finite rewards and log-probs, valid beta; returns N. Messages name the input."""
    if not isinstance(beta, int | float) or not math.isfinite(beta):
        raise ValueError(f"{loss_name}: beta must be a finite number, got {beta!r}")
    if beta_must_be_positive and beta <= 0:
        raise ValueError(
            f"{loss_name}: beta must be > 0 (its optimum is the beta-regularised policy), got {beta}"
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
    lengths = {name: tensor.shape[0] for name, tensor in present.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{loss_name}: inputs differ in length: {lengths}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError(f"{loss_name}: empty batch")
    for name in ("rewards", "logprobs", "ref_logprobs", "behaviour_logprobs"):
        tensor = present.get(name)
        if tensor is not None:
            bad = (~torch.isfinite(tensor.detach())).nonzero().flatten()
            if bad.numel():
                raise ValueError(f"{loss_name}: {name} has non-finite values at index {bad[:5].tolist()}")
    return n


def apply_averaging(
    loss_name: str,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    lengths: torch.Tensor | None,
    average_logprobs: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The averaging operator (Grinsztajn et al. 2024, arXiv 2406.19188): per-token means instead of sums.

    It makes the objective invariant to completion length but changes its fixed point, so it is off by
    default."""
    if not average_logprobs:
        return logprobs, ref_logprobs
    if lengths is None:
        raise ValueError(f"{loss_name}: average_logprobs=True needs `lengths` (completion tokens per row)")
    if lengths.shape != logprobs.shape:
        raise ValueError(
            f"{loss_name}: lengths has shape {tuple(lengths.shape)}, logprobs {tuple(logprobs.shape)}"
        )
    if bool((lengths <= 0).any()):
        raise ValueError(f"{loss_name}: lengths must be positive, got {lengths[lengths <= 0][:5].tolist()}")
    divisor = lengths.to(logprobs.dtype)
    return logprobs / divisor, ref_logprobs / divisor


def sequence_logprobs(token_logprobs: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """log pi(y|x) = sum over completion tokens of log pi(y_t | x, y_<t), accumulated in float32 or wider.

    token_logprobs: [B, T] log-probs of the tokens at each position; completion_mask: [B, T] bool/0-1.
    Returns [B]. Prompt and padding positions contribute nothing.
    """
    if token_logprobs.shape != completion_mask.shape:
        raise ValueError(
            f"token_logprobs {tuple(token_logprobs.shape)} and "
            f"completion_mask {tuple(completion_mask.shape)} differ"
        )
    accumulate = torch.promote_types(token_logprobs.dtype, torch.float32)
    return (token_logprobs.to(accumulate) * completion_mask.to(accumulate)).sum(dim=-1)


def reward_metrics(
    rewards: torch.Tensor, log_ratio: torch.Tensor, loss: torch.Tensor, groups: Groups
) -> dict[str, float]:
    rewards = rewards.detach().double()
    return {
        "loss": float(loss.detach()),
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std(unbiased=False)),
        "kl": float(log_ratio.detach().double().mean()),
        "num_groups": float(groups.count),
        "num_samples": float(rewards.numel()),
    }
