"""The learner's math: CoPG, RLOO and AGRO as pure functions of 1-D tensors (one entry per completion).

    out = copg_loss(logprobs, ref_logprobs, rewards, group_ids, beta, **options)
    out.loss      # scalar to minimise
    out.metrics   # reward_mean, reward_std, kl, loss, ...

See docs/algorithms.md for which loss fits which data.
"""

from collections.abc import Callable

from learner.algorithms.agro import agro_loss
from learner.algorithms.common import Groups, LossOutput, find_groups, sequence_logprobs
from learner.algorithms.copg import copg_loss
from learner.algorithms.rloo import rloo_loss

LOSSES: dict[str, Callable[..., LossOutput]] = {"copg": copg_loss, "rloo": rloo_loss, "agro": agro_loss}

__all__ = [
    "LOSSES",
    "Groups",
    "LossOutput",
    "agro_loss",
    "copg_loss",
    "find_groups",
    "rloo_loss",
    "sequence_logprobs",
]
