"""RLOO (check 6, truncated importance sampling) and AGRO (check 7): on the bandit and hand-worked tensors."""

import itertools

import pytest
import torch

from learner.algorithms import agro_loss, rloo_loss
from learner.algorithms.bandit import Bandit, LossFn, descend, expected_gradient, reward_only_baseline_loss
from learner.algorithms.common import find_groups


def test_rloo_hand_worked_advantages() -> None:
    # beta = 0, one group r = (1, 0, 0, 3): LOO baselines (3, 4, 4, 1)/3 -> A = (0, -4/3, -4/3, 8/3).
    # loss = -mean(A * logp) with logp = (-1, -1, -1, -2): -(0 + 4/3 + 4/3 - 16/3)/4 = 2/3.
    logprobs = torch.tensor([-1.0, -1.0, -1.0, -2.0], requires_grad=True)
    out = rloo_loss(
        logprobs, logprobs.detach(), torch.tensor([1.0, 0.0, 0.0, 3.0]), torch.zeros(4, dtype=torch.long), 0.0
    )
    assert out.loss.item() == pytest.approx(2 / 3)
    out.loss.backward()
    # d loss / d logp_i = -A_i / N
    assert torch.allclose(logprobs.grad, torch.tensor([0.0, 4 / 3, 4 / 3, -8 / 3]) / 4)


@pytest.mark.parametrize("loss_fn", [rloo_loss, agro_loss])
def test_advantages_sum_to_zero_per_group(loss_fn: LossFn) -> None:
    torch.manual_seed(0)
    group_ids = torch.tensor([3, 3, 3, 8, 8, 5, 5, 5, 5])
    logprobs = torch.randn(9, requires_grad=True)
    loss_fn(logprobs, torch.randn(9), torch.randn(9), group_ids, 0.1).loss.backward()
    advantages = -logprobs.grad * 9  # loss = -mean A_i logp_i
    groups = find_groups(group_ids, "test")
    assert torch.allclose(groups.sum(advantages), torch.zeros(3), atol=1e-6)


def test_rloo_on_policy_unbiased_by_exact_enumeration() -> None:
    """Check 6: 4 arms, r = (1, 0, 0, 1), theta = (0.2, -0.1, 0.4, -0.5), k = 3, beta = 0."""
    bandit = Bandit(
        torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64),
        0.0,
        torch.full((4,), 0.25, dtype=torch.float64),
    )
    theta = torch.tensor([0.2, -0.1, 0.4, -0.5], dtype=torch.float64)
    pi = torch.softmax(theta, 0)
    ascent = -expected_gradient(rloo_loss, bandit, theta, [pi, pi, pi])
    assert torch.allclose(
        ascent, torch.tensor([0.16402, -0.09267, -0.15279, 0.08145], dtype=torch.float64), atol=1e-5
    )
    grad_j = pi * bandit.rewards - pi * (pi * bandit.rewards).sum()  # d/dtheta E_pi r
    assert torch.allclose(ascent, grad_j, atol=1e-12)


def test_truncated_importance_weights() -> None:
    # Sequence log-ratios log pi - log mu = (0, ln 3, -ln 2, ln 1.5): weights (1, min(3, 2) = 2, 0.5, 1.5).
    logprobs = torch.tensor([-1.0, -1.0, -1.0, -1.0], requires_grad=True)
    behaviour = logprobs.detach() - torch.log(torch.tensor([1.0, 3.0, 0.5, 1.5]))
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0])
    group_ids = torch.tensor([0, 0, 1, 1])
    out = rloo_loss(
        logprobs,
        logprobs.detach(),
        rewards,
        group_ids,
        0.0,
        behaviour_logprobs=behaviour,
        importance_sampling="truncated",
        is_cap=2.0,
    )
    assert out.metrics["is_weight_max"] == pytest.approx(2.0)
    assert out.metrics["is_weight_mean"] == pytest.approx((1 + 2 + 0.5 + 1.5) / 4)
    out.loss.backward()
    # Advantages (1, -1, 1, -1) times weights, over N = 4; the weights carry no gradient.
    assert torch.allclose(logprobs.grad, -torch.tensor([1.0, -2.0, 0.5, -1.5]) / 4)
    plain = rloo_loss(logprobs.detach(), logprobs.detach(), rewards, group_ids, 0.0)
    assert "is_weight_mean" not in plain.metrics


@pytest.mark.parametrize(
    "behaviour",
    [[1 / 3, 1 / 3, 1 / 3], [0.6, 0.3, 0.1]],
    ids=["from pi_ref", "from mu=(0.6,0.3,0.1)"],
)
def test_agro_converges_off_policy_and_reward_only_baseline_does_not(
    bandit: Bandit, behaviour: list[float]
) -> None:
    """Check 7: groups of 3 drawn from a fixed behaviour policy; exact expected gradients."""
    mu = torch.tensor(behaviour, dtype=torch.float64)
    _, regrets = descend(
        lambda t: expected_gradient(agro_loss, bandit, t, [mu] * 3), bandit, steps=300, lr=1.0
    )
    assert bandit.regret(torch.softmax(torch.zeros(3, dtype=torch.float64), 0)) > 0.2  # it starts far away
    assert regrets[-1] < 1e-6, regrets[-1]  # beta * KL(pi || pi*) -> 0
    # The reward-only baseline settles at a stable, wrong fixed point (regret 9.5e-3 from pi_ref,
    # 2.1e-4 from mu; the same after 300 and 600 steps), measurably away from pi*.
    biased_theta, biased = descend(
        lambda t: expected_gradient(reward_only_baseline_loss, bandit, t, [mu] * 3), bandit, steps=600, lr=1.0
    )
    assert biased[-1] > 1e-4 and abs(biased[-1] - biased[299]) < 1e-9, biased[-1]
    assert (torch.softmax(biased_theta, 0) - bandit.optimal_policy()).abs().max().item() > 5e-3


def test_agro_expected_gradient_is_zero_at_the_optimum_for_any_data(bandit: Bandit) -> None:
    optimum = bandit.optimal_policy().log()
    for behaviour in itertools.permutations([0.7, 0.2, 0.1]):
        mu = torch.tensor(behaviour, dtype=torch.float64)
        assert expected_gradient(agro_loss, bandit, optimum, [mu, mu]).abs().max().item() < 1e-12
