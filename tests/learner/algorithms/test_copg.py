"""CoPG: hand-worked values, the closed-form gradient, its fixed point off-policy, on-policy = 2 grad J,
and naive off-policy policy gradient shown biased on the same data (checks 2-5)."""

import itertools
import math

import pytest
import torch

from learner.algorithms import copg_loss
from learner.algorithms.bandit import Bandit, descend, expected_gradient, group_loss, naive_pg_loss


def test_hand_worked_pair() -> None:
    # One group of two completions, beta = 0.5.
    # h = logp - ref = (-1 - -2, -3 - -2) = (1, -1); R_b = r - beta*h = (1 - 0.5, 0 + 0.5) = (0.5, 0.5)
    # -> equal regularised rewards: loss (1/(2*0.5)) * (0.5 - 0.5)^2 = 0.
    out = copg_loss(
        torch.tensor([-1.0, -3.0]),
        torch.tensor([-2.0, -2.0]),
        torch.tensor([1.0, 0.0]),
        torch.tensor([7, 7]),
        0.5,
    )
    assert out.loss.item() == 0.0
    # Same pair with r = (2, 0): R_b = (1.5, 0.5), loss = (1/1) * 1^2 = 1.
    out = copg_loss(
        torch.tensor([-1.0, -3.0]),
        torch.tensor([-2.0, -2.0]),
        torch.tensor([2.0, 0.0]),
        torch.tensor([7, 7]),
        0.5,
    )
    assert out.loss.item() == pytest.approx(1.0)
    assert out.metrics["kl"] == pytest.approx(0.0) and out.metrics["reward_mean"] == pytest.approx(1.0)


def test_group_of_three_averages_its_three_pairs() -> None:
    # beta = 1, ref = logp, so R_b = r = (0, 1, 3): pairs (0,1): 1, (0,2): 9, (1,2): 4
    # -> mean 14/3; divided by 2 beta: 7/3.
    logprobs = torch.tensor([-1.0, -1.0, -1.0])
    out = copg_loss(logprobs, logprobs, torch.tensor([0.0, 1.0, 3.0]), torch.tensor([0, 0, 0]), 1.0)
    assert out.loss.item() == pytest.approx(7 / 3)


def test_groups_are_averaged_not_pairs_pooled() -> None:
    # Group A (2 samples): one pair, value (1-0)^2 = 1. Group B (3 samples): mean 14/3 (above). beta = 1.
    logprobs = torch.full((5,), -1.0)
    out = copg_loss(
        logprobs, logprobs, torch.tensor([1.0, 0.0, 0.0, 1.0, 3.0]), torch.tensor([4, 4, 9, 9, 9]), 1.0
    )
    # Per group: pair mean / (2 beta) = 1/2 and (14/3)/2; then the mean over the two groups.
    assert out.loss.item() == pytest.approx((1 / 2 + (14 / 3) / 2) / 2)


def test_autograd_equals_closed_form_pair_gradient(bandit: Bandit) -> None:
    """Check 4: theta = (0.3, -0.2, 0.1), (y, y') = (0, 2) gives grad L = (-1.4, 0, 1.4)."""
    theta = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64, requires_grad=True)
    group_loss(copg_loss, bandit, theta, [0, 2]).backward()
    assert torch.allclose(theta.grad, torch.tensor([-1.4, 0.0, 1.4], dtype=torch.float64), atol=1e-12)
    # And for every pair: -(R_b(y) - R_b(y')) * (grad logp(y) - grad logp(y')) with grad logp(a) = e_a - pi.
    with torch.no_grad():
        logp = torch.log_softmax(theta, 0)
        regularised = bandit.rewards - bandit.beta * (logp - bandit.ref_probs.log())
    for y, other in itertools.permutations(range(3), 2):
        theta.grad = None
        group_loss(copg_loss, bandit, theta, [y, other]).backward()
        closed = -(regularised[y] - regularised[other]) * (
            torch.eye(3, dtype=torch.float64)[y] - torch.eye(3, dtype=torch.float64)[other]
        )
        assert torch.allclose(theta.grad, closed, atol=1e-12)


def theta_of(probs: torch.Tensor) -> torch.Tensor:
    return probs.log()


def test_expected_gradient_vanishes_at_the_optimum_only(
    bandit: Bandit, mu1: torch.Tensor, mu2: torch.Tensor
) -> None:
    """Check 2, first half: exact expectation over pairs y ~ mu1, y' ~ mu2."""
    at_optimum = expected_gradient(copg_loss, bandit, theta_of(bandit.optimal_policy()), [mu1, mu2])
    assert at_optimum.abs().max().item() < 1e-12
    for theta in ([0.0, 0.0, 0.0], [0.3, -0.2, 0.1], [2.0, 1.0, 0.0]):
        gradient = expected_gradient(copg_loss, bandit, torch.tensor(theta, dtype=torch.float64), [mu1, mu2])
        assert gradient.abs().max().item() > 1e-3


@pytest.mark.parametrize(
    "behaviours",
    [
        "mu1,mu2",
        "mu1,mu1",
        "other",
    ],
)
def test_gradient_descent_from_zero_reaches_the_optimum(
    bandit: Bandit, mu1: torch.Tensor, mu2: torch.Tensor, behaviours: str
) -> None:
    """Check 2, second half: regret < 1e-6 from theta = 0, for several full-support behaviour policies."""
    pairs = {
        "mu1,mu2": [mu1, mu2],
        "mu1,mu1": [mu1, mu1],
        "other": [
            torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64),
            torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64),
        ],
    }[behaviours]
    theta, regrets = descend(
        lambda t: expected_gradient(copg_loss, bandit, t, pairs), bandit, steps=300, lr=0.5
    )
    assert regrets[-1] < 1e-6, regrets[-1]
    assert torch.allclose(torch.softmax(theta, 0), bandit.optimal_policy(), atol=1e-4)


def test_naive_off_policy_pg_on_the_same_pairs_is_biased(
    bandit: Bandit, mu1: torch.Tensor, mu2: torch.Tensor
) -> None:
    """Check 3: baseline-0 policy gradient on off-policy pairs converges to the wrong policy."""
    theta, regrets = descend(
        lambda t: expected_gradient(naive_pg_loss, bandit, t, [mu1, mu2]), bandit, steps=400, lr=0.5
    )
    assert torch.allclose(
        torch.softmax(theta, 0), torch.tensor([0.19399, 0.25014, 0.55587], dtype=torch.float64), atol=1e-4
    )
    assert regrets[-1] == pytest.approx(0.63779, abs=1e-4)


def test_on_policy_expected_pair_gradient_is_twice_grad_j(bandit: Bandit) -> None:
    """Check 5: E_{y,y' ~ pi}[-grad L] = 2 grad J at theta = (0.3, -0.2, 0.1)."""
    theta = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    pi = torch.softmax(theta, 0)
    ascent = -expected_gradient(copg_loss, bandit, theta, [pi, pi])
    assert torch.allclose(ascent, torch.tensor([0.44131, 0.14262, -0.58393], dtype=torch.float64), atol=1e-5)
    # grad J by autograd of J(softmax(theta)) itself.
    leaf = theta.clone().requires_grad_(True)
    probs = torch.softmax(leaf, 0)
    value = (probs * bandit.rewards).sum() - bandit.beta * (
        probs * (probs.log() - bandit.ref_probs.log())
    ).sum()
    (grad_j,) = torch.autograd.grad(value, leaf)
    assert torch.allclose(ascent, 2 * grad_j, atol=1e-12)


def test_ipo_special_case() -> None:
    """With rewards +1/4, -1/4 for (winner, loser), CoPG is IPO's loss with tau = beta, up to a constant:
    (1/(2 beta)) (1/2 - beta * (h_w - h_l))^2 = (beta/2) * ((h_w - h_l) - 1/(2 beta))^2."""
    beta = 0.3
    for margin in (-1.0, 0.0, 0.7, 2.5):
        logprobs = torch.tensor([margin - 2.0, -2.0])
        out = copg_loss(
            logprobs, torch.tensor([-2.0, -2.0]), torch.tensor([0.25, -0.25]), torch.tensor([0, 0]), beta
        )
        assert out.loss.item() == pytest.approx(beta / 2 * (margin - 1 / (2 * beta)) ** 2, rel=1e-5)
        assert math.isfinite(out.loss.item())
