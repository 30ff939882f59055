"""Contrastive Policy Gradient (CoPG; Flet-Berliac et al. 2024, arXiv 2406.19185).

For completions y, y' of the same prompt, with the regularised reward R_b(y) = r(y) - beta * h(y) and
h(y) = log pi(y) - log pi_ref(y) computed with the CURRENT policy (the gradient flows through h):

    L(y, y') = (1 / (2 beta)) * (R_b(y) - R_b(y'))^2                  (the CoPG pair loss)
    grad L  = -(R_b(y) - R_b(y')) * (grad log pi(y) - grad log pi(y'))  (its contrastive policy gradient)

Its unique fixed point is pi* = pi_ref exp(r / beta) / Z for ANY full-support behaviour policies (where
R_b is constant: "generation consistency"), so it needs neither behaviour log-probs nor importance
weights: it is valid off-policy. On-policy its expected gradient is 2 grad J. With rewards +1/4, -1/4 for
a (winner, loser) pair it is IPO's loss with tau = beta, up to a constant factor.

With k > 2 samples all pairs of a group are used: mean over the group's k(k-1)/2 pairs, then mean over
groups. The pair mean has a closed form, sum_{i<j} (R_i - R_j)^2 = k * sum_i (R_i - mean R)^2, so a group
costs O(k) and the batch O(N). Centring before squaring (rather than k sum R^2 - (sum R)^2) avoids the
cancellation between two large numbers when rewards are large compared with their spread.
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

# The batch loss is the mean over groups of each group's pair mean (see batch_share).
NORMALISER: Normaliser = "groups"


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
    """CoPG loss over all pairs within each group.

    logprobs [N] (with grad), ref_logprobs [N], rewards [N], group_ids [N] int: one entry per completion,
    sequence log-probs summed over completion tokens. beta > 0. `lengths` [N] with `average_logprobs=True`
    applies the averaging operator.
    """
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
    dtype = compute_dtype(logprobs)
    logprobs, ref_logprobs = apply_averaging(
        "copg_loss", logprobs.to(dtype), ref_logprobs.to(dtype), lengths, average_logprobs
    )
    log_ratio = logprobs - ref_logprobs.detach()
    regularised = rewards.to(dtype) - beta * log_ratio  # R_b, differentiable through h
    centred = regularised - groups.mean(regularised)[groups.index]
    sizes = groups.sizes.to(dtype)
    # mean over pairs = k * sum (R - mean R)^2 / (k (k - 1) / 2) = 2 * sum (R - mean R)^2 / (k - 1)
    pair_mean = 2 * groups.sum(centred**2) / (sizes - 1)
    loss = (pair_mean / (2 * beta)).mean()
    metrics = reward_metrics(rewards, log_ratio, loss, groups)
    metrics["regularised_reward_mean"] = float(regularised.detach().mean())
    # The pair gradient weight |R_b(y) - R_b(y')| plays the role of an advantage; report its per-sample scale.
    metrics["advantage_abs_mean"] = float(centred.detach().abs().mean())
    return LossOutput(loss=loss, metrics=metrics)
