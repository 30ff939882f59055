"""AGRO, this project's reading (Tang et al. 2025, arXiv 2503.19612; see ALGORITHMS.md).

    R_i = r_i - beta * sg(h(y_i)),   h = log pi - log pi_ref from the CURRENT policy
    b_i = mean_{j != i} R_j,         L = -mean_i sg(R_i - b_i) * log pi(y_i)

No importance weights, yet from on-policy, off-policy or mixed data it converges to
pi* = pi_ref exp(r / beta) / Z: summed over a group of k, with g_i = grad log pi(y_i),
    sum_i (R_i - b_i) g_i = (1/(k-1)) * sum_{i<j} (R_i - R_j)(g_i - g_j),
the all-pairs CoPG direction (arXiv 2406.19185), which vanishes in expectation only at pi*. This needs the
baseline to include the -beta*h part: a reward-only baseline is biased off-policy. The actors'
generation-time log-probs must not be used for h (that is biased off-policy policy gradient again).
With on-policy data this is KL-regularised RLOO.
"""

import torch

from learner.algorithms.common import (
    LossOutput,
    Normaliser,
    apply_averaging,
    check_inputs,
    compute_dtype,
    find_groups,
    reward_metrics,
)

# The batch loss is the mean over completions of per-row terms that depend on their group only.
NORMALISER: Normaliser = "samples"


def agro_loss(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    beta: float,
    *,
    lengths: torch.Tensor | None = None,
    average_logprobs: bool = False,
) -> LossOutput:
    """AGRO loss with a leave-one-out baseline of KL-regularised rewards.

    Inputs as for `copg_loss`: 1-D [N], one entry per completion, beta > 0.
    """
    check_inputs(
        "agro_loss",
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
    groups = find_groups(group_ids, "agro_loss")
    dtype = compute_dtype(logprobs)
    logprobs, ref_logprobs = apply_averaging(
        "agro_loss", logprobs.to(dtype), ref_logprobs.to(dtype), lengths, average_logprobs
    )
    log_ratio = (logprobs - ref_logprobs).detach()
    regularised = rewards.to(dtype) - beta * log_ratio
    advantages = regularised - groups.leave_one_out_mean(regularised)
    loss = -(advantages * logprobs).mean()
    metrics = reward_metrics(rewards, log_ratio, loss, groups)
    metrics["advantage_abs_mean"] = float(advantages.abs().mean())
    return LossOutput(loss=loss, metrics=metrics)
