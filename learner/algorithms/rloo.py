"""REINFORCE Leave-One-Out (RLOO; Ahmadian et al. 2024, arXiv 2402.14740), KL-shaped, optionally with
truncated importance weights.

    R_i = r_i - beta * sg(h(y_i)),      b_i = 1/(k-1) sum_{j != i} R_j,      A_i = R_i - b_i
    L   = -mean_i w_i * sg(A_i) * log pi_T(y_i)

This is the paper's RLOO estimator (k samples per prompt, each baselined by the mean reward of the other
k-1, with the KL penalty folded into the sequence-level reward). The advantages of a group sum to 0
(A_i = k/(k-1) * (R_i - mean R)). Valid ON-policy only (w_i = 1). With importance_sampling="truncated",
w_i = sg(min(exp(log pi_T(y_i) - log mu(y_i)), is_cap)) at the sequence level corrects slightly stale
samples at the cost of some bias from the cap.

Two log-probs of the current policy enter: h = log pi - log pi_ref uses the policy pi itself (the
regularised objective is defined on pi), while the score function and the importance ratio use
`sampling_logprobs`, log pi_T of the distribution the actors sample from (pi at the sampling
temperature T, logits / T), because REINFORCE is unbiased only with the score of the distribution the
samples come from, and mu (vLLM's processed log-probs) is that distribution under older weights.
At T = 1, pi_T = pi and both are `logprobs`.
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

IMPORTANCE_SAMPLING = ("none", "truncated")


# The batch loss is the mean over completions of per-row terms that depend on their group only.
NORMALISER: Normaliser = "samples"


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
    sampling_logprobs: torch.Tensor | None = None,
) -> LossOutput:
    """RLOO loss. Inputs as for `copg_loss` (1-D [N]), beta >= 0.

    `behaviour_logprobs` [N] (sequence sums under the sampling distribution of the policy that generated
    each completion) are needed only for importance_sampling="truncated"; the weights always use the
    summed (sequence-level) ratio, also when `average_logprobs=True` rescales the log-probs in the loss.
    `sampling_logprobs` [N] (with grad): log pi_T(y) of the current policy under the actors' sampling
    distribution, used in the score function and the importance ratio; None means `logprobs` (T = 1).
    """
    if importance_sampling not in IMPORTANCE_SAMPLING:
        raise ValueError(
            f"rloo_loss: importance_sampling must be one of {IMPORTANCE_SAMPLING}, "
            f"got {importance_sampling!r}"
        )
    truncated = importance_sampling == "truncated"
    if truncated and behaviour_logprobs is None:
        raise ValueError("rloo_loss: importance_sampling='truncated' needs behaviour_logprobs")
    if truncated and not is_cap > 0:
        raise ValueError(f"rloo_loss: is_cap must be > 0, got {is_cap}")
    check_inputs(
        "rloo_loss",
        {
            "logprobs": logprobs,
            "ref_logprobs": ref_logprobs,
            "rewards": rewards,
            "group_ids": group_ids,
            "lengths": lengths,
            "behaviour_logprobs": behaviour_logprobs if truncated else None,
            "sampling_logprobs": sampling_logprobs,
        },
        beta,
        beta_must_be_positive=False,
    )
    groups = find_groups(group_ids, "rloo_loss")
    dtype = compute_dtype(logprobs)
    summed_sampling = (logprobs if sampling_logprobs is None else sampling_logprobs).to(dtype)
    logprobs, ref_logprobs = apply_averaging(
        "rloo_loss", logprobs.to(dtype), ref_logprobs.to(dtype), lengths, average_logprobs
    )
    # The score term gets the same averaging as log pi (apply_averaging above checked the lengths).
    score = summed_sampling
    if average_logprobs and lengths is not None:
        score = summed_sampling / lengths.to(dtype)
    log_ratio = (logprobs - ref_logprobs).detach()
    shaped = rewards.to(dtype) - beta * log_ratio
    advantages = shaped - groups.leave_one_out_mean(shaped)
    metrics: dict[str, float] = {}
    if truncated:
        assert behaviour_logprobs is not None  # checked above; narrows the type
        # pi_T(y)/mu(y) is a ratio of sequence probabilities, so it uses the summed log-probs even when
        # the averaging operator is on.
        ratio = summed_sampling.detach() - behaviour_logprobs.to(dtype)
        weights = torch.exp(ratio).clamp(max=is_cap)
        metrics |= {
            "is_weight_mean": float(weights.mean()),
            "is_weight_min": float(weights.min()),
            "is_weight_max": float(weights.max()),
        }
        loss = -(weights * advantages * score).mean()
    else:
        loss = -(advantages * score).mean()
    metrics |= reward_metrics(rewards, log_ratio, loss, groups)
    metrics["advantage_abs_mean"] = float(advantages.abs().mean())
    return LossOutput(loss=loss, metrics=metrics)
