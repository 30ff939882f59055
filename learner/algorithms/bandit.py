"""The CoPG paper's toy: a tabular softmax bandit (one token = one arm) to check and illustrate the losses.

pi = softmax(theta), log pi(y) = log_softmax(theta)[y]. Exact expected gradients are computed by
enumerating every group a behaviour distribution can draw, each weighted by its probability, with
the public loss functions. `python -m learner.algorithms.bandit --out docs/` draws the regret curves.
"""

import argparse
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from learner.algorithms.common import LossOutput

LossFn = Callable[..., LossOutput]


@dataclass(frozen=True)
class Bandit:
    """Rewards r, regularisation beta and reference policy pi_ref (probabilities), all float64."""

    rewards: torch.Tensor
    beta: float
    ref_probs: torch.Tensor

    @classmethod
    def paper_toy(cls) -> "Bandit":
        """The CoPG paper's toy (ALGORITHMS.md's fixture): r = (2.5, 2, 1), beta = 0.5, uniform ref."""
        return cls(
            torch.tensor([2.5, 2.0, 1.0], dtype=torch.float64),
            0.5,
            torch.full((3,), 1 / 3, dtype=torch.float64),
        )

    def optimal_policy(self) -> torch.Tensor:
        """pi* = softmax(log pi_ref + r / beta)."""
        return torch.softmax(self.ref_probs.log() + self.rewards / self.beta, dim=0)

    def value(self, probs: torch.Tensor) -> float:
        """J(pi) = E_pi r - beta * KL(pi || pi_ref)."""
        kl = (probs * (probs.log() - self.ref_probs.log())).sum()
        return float((probs * self.rewards).sum() - self.beta * kl)

    def optimal_value(self) -> float:
        """J(pi*) = beta * logsumexp(log pi_ref + r / beta)."""
        return float(self.beta * torch.logsumexp(self.ref_probs.log() + self.rewards / self.beta, dim=0))

    def regret(self, probs: torch.Tensor) -> float:
        """J(pi*) - J(pi), which equals beta * KL(pi || pi*)."""
        return self.optimal_value() - self.value(probs)


def group_logprobs(theta: torch.Tensor, arms: Sequence[int]) -> torch.Tensor:
    """log pi(arm) = log_softmax(theta)[arm] for each drawn arm: one token = one arm."""
    return torch.log_softmax(theta, dim=0)[list(arms)]


def group_loss(
    loss_fn: LossFn,
    bandit: Bandit,
    theta: torch.Tensor,
    arms: Sequence[int],
    behaviour_logprobs: torch.Tensor | None = None,
    **options: object,
) -> torch.Tensor:
    """The public loss on one group (the arms drawn for one prompt)."""
    logprobs = group_logprobs(theta, arms)
    ref = bandit.ref_probs.log()[list(arms)]
    if behaviour_logprobs is not None:
        options = {**options, "behaviour_logprobs": behaviour_logprobs}
    group_ids = torch.zeros(len(arms), dtype=torch.long)
    return loss_fn(logprobs, ref, bandit.rewards[list(arms)], group_ids, bandit.beta, **options).loss


def expected_gradient(
    loss_fn: LossFn,
    bandit: Bandit,
    theta: torch.Tensor,
    behaviours: Sequence[torch.Tensor],
    pass_behaviour_logprobs: bool = False,
    **options: object,
) -> torch.Tensor:
    """E[grad loss] over groups whose i-th arm is drawn from behaviours[i], by exact enumeration."""
    theta = theta.detach().clone().requires_grad_(True)
    total = torch.zeros((), dtype=theta.dtype)
    for arms in itertools.product(range(len(bandit.rewards)), repeat=len(behaviours)):
        weight = math.prod(float(mu[arm]) for mu, arm in zip(behaviours, arms, strict=True))
        if not weight:
            continue
        behaviour = None
        if pass_behaviour_logprobs:
            behaviour = torch.stack([mu[arm].log() for mu, arm in zip(behaviours, arms, strict=True)])
        total = total + weight * group_loss(loss_fn, bandit, theta, arms, behaviour, **options)
    (gradient,) = torch.autograd.grad(total, theta)
    return gradient


def naive_pg_loss(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    beta: float,
) -> LossOutput:
    """The failure CoPG fixes: policy gradient with baseline 0 applied to off-policy samples,
    -mean sg(r - beta * h) * log pi. Its fixed point depends on the behaviour policy."""
    regularised = (rewards - beta * (logprobs - ref_logprobs)).detach()
    return LossOutput(loss=-(regularised * logprobs).mean())


def reward_only_baseline_loss(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    beta: float,
) -> LossOutput:
    """AGRO's estimator with the baseline built from rewards only (no -beta*h part): biased off-policy.
    One group per call (the bandit helpers call losses group by group)."""
    k = rewards.numel()
    baseline = (rewards.sum() - rewards) / (k - 1)
    advantage = (rewards - beta * (logprobs - ref_logprobs) - baseline).detach()
    return LossOutput(loss=-(advantage * logprobs).mean())


def descend(
    gradient_at: Callable[[torch.Tensor], torch.Tensor],
    bandit: Bandit,
    steps: int,
    lr: float,
    record_every: int = 1,
) -> tuple[torch.Tensor, list[float]]:
    """Plain gradient descent on theta from 0 with exact expected gradients; returns theta and regrets."""
    theta = torch.zeros(len(bandit.rewards), dtype=torch.float64)
    regrets = []
    for step in range(steps):
        theta = theta - lr * gradient_at(theta)
        if step % record_every == 0:
            regrets.append(bandit.regret(torch.softmax(theta, 0)))
    return theta, regrets


def main(argv: Sequence[str] | None = None) -> None:
    from learner.algorithms import agro_loss, copg_loss, rloo_loss

    parser = argparse.ArgumentParser(description="Draw regret vs steps on the CoPG paper's bandit.")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="directory for bandit_regret.png")
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args(argv)

    bandit = Bandit.paper_toy()
    mu1 = torch.tensor([0.1, 0.2, 0.7], dtype=torch.float64)
    mu2 = torch.tensor([0.05, 0.05, 0.9], dtype=torch.float64)
    # On a pair, the leave-one-out losses average over 2 samples where CoPG sums the pair's gradient, so
    # their gradients are half of CoPG's (ALGORITHMS.md: "the pair gradient equals RLOO with k=2 (x2)").
    # Doubling them gives every curve the same step size; naive PG averages over the pair like CoPG.
    curves = {
        "CoPG, pairs from (mu1, mu2)": lambda t: expected_gradient(copg_loss, bandit, t, [mu1, mu2]),
        "AGRO, pairs from (mu1, mu2)": lambda t: 2 * expected_gradient(agro_loss, bandit, t, [mu1, mu2]),
        "RLOO + truncated IS (cap 2), same pairs": lambda t: (
            2
            * expected_gradient(
                rloo_loss, bandit, t, [mu1, mu2], True, importance_sampling="truncated", is_cap=2.0
            )
        ),
        "naive off-policy PG, same pairs": lambda t: expected_gradient(naive_pg_loss, bandit, t, [mu1, mu2]),
        "reward-only LOO baseline, same pairs": lambda t: (
            2 * expected_gradient(reward_only_baseline_loss, bandit, t, [mu1, mu2])
        ),
        "RLOO on-policy (reference)": lambda t: (
            2 * expected_gradient(rloo_loss, bandit, t, [torch.softmax(t, 0)] * 2)
        ),
    }
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 1e-12  # regrets reach float64 round-off (|regret| ~ 1e-16); the log axis draws them here
    figure, axis = plt.subplots(figsize=(7.5, 4.5))
    for label, gradient_at in curves.items():
        _, regrets = descend(gradient_at, bandit, args.steps, lr=0.5)
        final = f"{regrets[-1]:.1e}" if regrets[-1] > floor else f"< {floor:.0e}"
        # CoPG and AGRO coincide on pairs: CoPG drawn wide and pale underneath, AGRO dashed on top.
        style = {"linewidth": 5, "alpha": 0.35} if label.startswith("CoPG") else {}
        if label.startswith("AGRO"):
            style = {"linestyle": "--"}
        shown = [max(regret, floor) for regret in regrets]
        axis.plot(range(1, len(shown) + 1), shown, label=f"{label}: {final}", **style)
        print(f"{label:40s} final regret {regrets[-1]:.3e}")
    axis.set_yscale("log")
    axis.set_xlabel("gradient steps (exact expected gradient, lr 0.5)")
    axis.set_ylabel("regret  J(pi*) - J(pi)")
    axis.set_title(
        "CoPG paper's toy: r = (2.5, 2, 1), beta = 0.5, pi_ref uniform; pairs y ~ mu1 = (0.1, 0.2, 0.7),\n"
        "y' ~ mu2 = (0.05, 0.05, 0.9); regret drawn at 1e-12 once below it"
    )
    axis.title.set_fontsize(9)
    axis.legend(fontsize=8, loc="center right")
    figure.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out / "bandit_regret.png", dpi=120)
    print(f"wrote {args.out / 'bandit_regret.png'}")


if __name__ == "__main__":
    main()
