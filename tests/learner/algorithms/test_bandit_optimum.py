"""Check 1: the exact optimum of the paper's toy and the regret identity J(pi*) - J(pi) = beta KL."""

import torch

from learner.algorithms.bandit import Bandit


def test_optimum_and_values_match_the_paper(bandit: Bandit) -> None:
    optimum = bandit.optimal_policy()
    assert torch.allclose(optimum, torch.tensor([0.70538, 0.25950, 0.03512], dtype=torch.float64), atol=1e-5)
    assert abs(bandit.optimal_value() - 2.125200) < 1e-6
    assert abs(bandit.value(optimum) - 2.125200) < 1e-6  # J(pi*) from both formulas
    assert abs(bandit.value(bandit.ref_probs) - 1.833333) < 1e-6


def test_regret_identity(bandit: Bandit) -> None:
    optimum = bandit.optimal_policy()
    for probs in ([0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]):
        pi = torch.tensor(probs, dtype=torch.float64)
        kl = float((pi * (pi.log() - optimum.log())).sum())
        assert abs(bandit.regret(pi) - bandit.beta * kl) < 1e-12
    assert abs(bandit.regret(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)) - 0.109680) < 1e-6


def test_generation_consistency_at_the_optimum(bandit: Bandit) -> None:
    """R_b(y) = r(y) - beta * log(pi*(y) / pi_ref(y)) is the same for every y (= beta log Z)."""
    optimum = bandit.optimal_policy()
    regularised = bandit.rewards - bandit.beta * (optimum.log() - bandit.ref_probs.log())
    assert torch.allclose(regularised, torch.full((3,), bandit.optimal_value(), dtype=torch.float64))
