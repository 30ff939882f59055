"""The learner's math: CoPG, RLOO and AGRO as pure functions of 1-D tensors (one entry per completion).

    out = copg_loss(logprobs, ref_logprobs, rewards, group_ids, beta, **options)
    out.loss      # scalar to minimise
    out.metrics   # reward_mean, reward_std, kl, loss, ...

Every loss is a mean (over groups or over samples, `NORMALISERS`) of terms that each depend on one
group's rows only; the learner relies on that to train on whole groups a micro-batch at a time.
See docs/algorithms.md for which loss fits which data.
"""

from collections.abc import Callable

from learner.algorithms import agro, copg, rloo
from learner.algorithms.agro import agro_loss
from learner.algorithms.common import (
    Groups,
    LossOutput,
    Normaliser,
    batch_share,
    find_groups,
    sequence_logprobs,
)
from learner.algorithms.copg import copg_loss
from learner.algorithms.rloo import rloo_loss

LOSSES: dict[str, Callable[..., LossOutput]] = {"copg": copg_loss, "rloo": rloo_loss, "agro": agro_loss}

NORMALISERS: dict[str, Normaliser] = {
    "copg": copg.NORMALISER,
    "rloo": rloo.NORMALISER,
    "agro": agro.NORMALISER,
}
"""What each loss of `LOSSES` averages over at the top level (see `batch_share`)."""

__all__ = [
    "LOSSES",
    "NORMALISERS",
    "Groups",
    "LossOutput",
    "Normaliser",
    "agro_loss",
    "batch_share",
    "copg_loss",
    "find_groups",
    "rloo_loss",
    "sequence_logprobs",
]
