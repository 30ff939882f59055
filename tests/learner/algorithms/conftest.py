"""Fixtures of the CoPG paper's toy bandit (ALGORITHMS.md, 'Checks that tests must make')."""

import pytest
import torch

from learner.algorithms.bandit import Bandit


@pytest.fixture
def bandit() -> Bandit:
    return Bandit.paper_toy()


@pytest.fixture
def mu1() -> torch.Tensor:
    return torch.tensor([0.1, 0.2, 0.7], dtype=torch.float64)


@pytest.fixture
def mu2() -> torch.Tensor:
    return torch.tensor([0.05, 0.05, 0.9], dtype=torch.float64)
