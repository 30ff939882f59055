"""Contrastive Policy Gradient (CoPG; Flet-Berliac et al. 2024, arXiv 2406.19185).

For completions y, y' of the same prompt, with the regularised reward R_b(y) = r(y) - beta * h(y) and
h(y) = log pi(y) - log pi_ref(y) computed with the CURRENT policy (gradient flows through h):

    L(y, y') = (1 / (2 beta)) * (R_b(y) - R_b(y'))^2                       (paper, Eq. 8)
    grad L  = -(R_b(y) - R_b(y')) * (grad log pi(y) - grad log pi(y'))

Its unique fixed point is pi* = pi_ref exp(r / beta) / Z for ANY full-support behaviour policies, so it
needs neither behaviour log-probs nor importance weights: it is valid off-policy. With k > 2 samples
all pairs of a group are used: mean over pairs, then over groups. The pair mean is computed in closed
form from per-group sums, sum_{i<j} (R_i - R_j)^2 = k * sum_i R_i^2 - (sum_i R_i)^2, so it is O(N).
"""

import torch

from learner.algorithms.common import LossOutput, apply_averaging, check_inputs, find_groups, reward_metrics


def copg_loss(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    beta: float,
    *,
    lengths: torch.Tensor | None = None,
    average_logprobs: bool = False,
) -> LossOutput:
    """CoPG loss over all pairs within each group. Inputs are 1-D, one entry per completion."""
    check_inputs(
        "copg_loss",
        {
            "logprobs": logprobs,
            "ref_logprobs": ref_logprobs,
            "rewards": rewards,
            "group_ids": group_ids,
            "lengths": lengths,
        },
        beta,
        beta_must_be_positive=True,
    )
    groups = find_groups(group_ids, "copg_loss")
    logprobs, ref_logprobs = apply_averaging("copg_loss", logprobs, ref_logprobs, lengths, average_logprobs)
    log_ratio = logprobs - ref_logprobs.detach()
    regularised = rewards.to(logprobs.dtype) - beta * log_ratio  # R_b, differentiable through h
    sizes = groups.sizes.to(regularised.dtype)
    pair_sum = sizes * groups.sum(regularised**2) - groups.sum(regularised) ** 2
    pair_mean = pair_sum / (sizes * (sizes - 1) / 2)
    loss = (pair_mean / (2 * beta)).mean()
    metrics = reward_metrics(rewards, log_ratio, loss, groups)
    metrics["regularised_reward_mean"] = float(regularised.detach().mean())
    return LossOutput(loss=loss, metrics=metrics)
