"""REINFORCE Leave-One-Out (RLOO; Ahmadian et al. 2024, arXiv 2402.14740), KL-shaped, optionally
importance-weighted.

    R_i = r_i - beta * sg(h(y_i)),      b_i = mean_{j != i} R_j,      A_i = R_i - b_i      (paper, Eq. 6)
    L   = -mean_i w_i * sg(A_i) * log pi(y_i)

The advantages of a group sum to 0 (A_i = k/(k-1) * (R_i - mean R)). Valid ON-policy only (w_i = 1).
With importance_sampling="truncated", w_i = sg(min(exp(log pi(y_i) - log mu(y_i)), is_cap)) at the
sequence level corrects slightly stale samples at the cost of some bias from the cap.
"""

import torch

from learner.algorithms.common import LossOutput, apply_averaging, check_inputs, find_groups, reward_metrics

IMPORTANCE_SAMPLING = ("none", "truncated")


def rloo_loss(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    beta: float,
    *,
    lengths: torch.Tensor | None = None,
    average_logprobs: bool = False,
    behaviour_logprobs: torch.Tensor | None = None,
    importance_sampling: str = "none",
    is_cap: float = 2.0,
) -> LossOutput:
    """RLOO loss; `behaviour_logprobs` (sequence sums under the generating policy) only for "truncated"."""
    if importance_sampling not in IMPORTANCE_SAMPLING:
        raise ValueError(
            f"rloo_loss: importance_sampling must be one of {IMPORTANCE_SAMPLING}, "
            f"got {importance_sampling!r}"
        )
    if importance_sampling == "truncated" and behaviour_logprobs is None:
        raise ValueError("rloo_loss: importance_sampling='truncated' needs behaviour_logprobs")
    if importance_sampling == "truncated" and not is_cap > 0:
        raise ValueError(f"rloo_loss: is_cap must be > 0, got {is_cap}")
    check_inputs(
        "rloo_loss",
        {
            "logprobs": logprobs,
            "ref_logprobs": ref_logprobs,
            "rewards": rewards,
            "group_ids": group_ids,
            "lengths": lengths,
            "behaviour_logprobs": behaviour_logprobs if importance_sampling == "truncated" else None,
        },
        beta,
        beta_must_be_positive=False,
    )
    groups = find_groups(group_ids, "rloo_loss")
    logprobs, ref_logprobs = apply_averaging("rloo_loss", logprobs, ref_logprobs, lengths, average_logprobs)
    log_ratio = (logprobs - ref_logprobs).detach()
    shaped = rewards.to(logprobs.dtype) - beta * log_ratio
    advantages = shaped - groups.leave_one_out_mean(shaped)
    weights = torch.ones_like(advantages)
    metrics: dict[str, float] = {}
    if importance_sampling == "truncated":
        assert behaviour_logprobs is not None
        weights = torch.exp(logprobs.detach() - behaviour_logprobs.to(logprobs.dtype)).clamp(max=is_cap)
        metrics |= {"is_weight_mean": float(weights.mean()), "is_weight_max": float(weights.max())}
    loss = -(weights * advantages * logprobs).mean()
    metrics |= reward_metrics(rewards, log_ratio, loss, groups)
    metrics["advantage_abs_mean"] = float(advantages.abs().mean())
    return LossOutput(loss=loss, metrics=metrics)
