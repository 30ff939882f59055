"""RLOO at a sampling temperature T != 1: `sampling_logprobs` (log pi_T, logits / T) enter the importance
ratio and the score function, while h = log pi - log pi_ref keeps the untempered policy."""

import itertools

import pytest
import torch

from learner.algorithms import rloo_loss


def test_importance_weights_compare_the_sampling_distribution_with_mu() -> None:
    """Fresh samples: mu is pi_T under the same weights, so every weight is 1, however far the untempered
    log pi is from it (before the fix the ratio used log pi and these weights were exp(+-0.7))."""
    logprobs = torch.tensor([-2.0, -1.3, -3.0, -0.6], dtype=torch.float64)
    sampling = torch.tensor([-1.3, -2.0, -2.3, -1.3], dtype=torch.float64)
    out = rloo_loss(
        logprobs, logprobs - 0.1, torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([0, 0, 1, 1]), 0.1,
        behaviour_logprobs=sampling.clone(), importance_sampling="truncated", sampling_logprobs=sampling,
    )  # fmt: skip
    assert out.metrics["is_weight_min"] == out.metrics["is_weight_max"] == pytest.approx(1.0, abs=1e-12)
    assert out.metrics["kl"] == pytest.approx(0.1)  # h from the untempered log pi


def test_the_gradient_flows_through_the_sampling_logprobs_and_h_stays_on_pi() -> None:
    logprobs = torch.tensor([-2.0, -1.0, -1.5], dtype=torch.float64, requires_grad=True)
    sampling = torch.tensor([-2.5, -0.8, -1.6], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-1.0, -1.0, -1.0], dtype=torch.float64)
    rewards = torch.tensor([1.0, 0.0, 0.5])
    beta = 0.2
    group = torch.zeros(3, dtype=torch.long)
    out = rloo_loss(logprobs, ref, rewards, group, beta, sampling_logprobs=sampling)
    out.loss.backward()
    assert logprobs.grad is None or bool((logprobs.grad == 0).all())  # h is detached: no path through pi
    shaped = rewards.double() - beta * (logprobs.detach() - ref)  # KL shaping with log pi, not log pi_T
    advantages = shaped - (shaped.sum() - shaped) / 2
    assert torch.allclose(sampling.grad, -advantages / 3)


def test_on_policy_rloo_with_the_tempered_score_is_the_gradient_of_the_tempered_policys_reward() -> None:
    """Exact enumeration of all k-tuples drawn from pi_T = softmax(theta / T): the expected gradient of
    the loss with `sampling_logprobs = log pi_T` is -grad_theta E_{pi_T}[r], the policy gradient of the
    policy as the actors run it (beta = 0)."""
    rewards = torch.tensor([1.0, 0.2, 0.0, 0.7], dtype=torch.float64)
    theta = torch.tensor([0.3, -0.4, 0.1, 0.6], dtype=torch.float64, requires_grad=True)
    temperature, k = 0.7, 3
    tempered = torch.log_softmax(theta / temperature, dim=0)
    expected = torch.zeros(4, dtype=torch.float64)
    for arms in itertools.product(range(4), repeat=k):
        index = torch.tensor(arms)
        probability = tempered.detach()[index].sum().exp()
        out = rloo_loss(
            torch.log_softmax(theta, 0)[index], torch.zeros(k, dtype=torch.float64), rewards[index],
            torch.zeros(k, dtype=torch.long), 0.0, sampling_logprobs=tempered[index],
        )  # fmt: skip
        (gradient,) = torch.autograd.grad(out.loss, theta, retain_graph=True)
        expected += probability * gradient
    (true_gradient,) = torch.autograd.grad((tempered.exp() * rewards).sum(), theta)
    assert torch.allclose(-expected, true_gradient, atol=1e-12)
