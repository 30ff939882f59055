"""Hand-worked metrics for every loss, the identities between the losses (CoPG pair = 2 x RLOO with k = 2,
AGRO = RLOO without importance weights), AGRO's baseline worked by hand, and numerics: fp32 accumulation,
no cancellation in CoPG's closed-form pair mean, sequence-level importance weights under averaging."""

import pytest
import torch

from learner.algorithms import LOSSES, agro_loss, copg_loss, rloo_loss, sequence_logprobs


def metrics_batch() -> dict[str, torch.Tensor]:
    # Two groups of two. h = logp - ref = (0.5, -0.5, 0, 1); with beta = 1, R = r - h = (0.5, 0.5, 3, 0).
    return {
        "logprobs": torch.tensor([-1.0, -2.0, -1.0, -1.0], dtype=torch.float64),
        "ref_logprobs": torch.tensor([-1.5, -1.5, -1.0, -2.0], dtype=torch.float64),
        "rewards": torch.tensor([1.0, 0.0, 3.0, 1.0], dtype=torch.float64),
        "group_ids": torch.tensor([10, 10, 20, 20]),
    }


# CoPG: group 10 has R = (0.5, 0.5) -> pair loss 0; group 20 (3 - 0)^2 / (2 * 1) = 4.5; mean over groups 2.25.
#   Its advantage_abs_mean is the mean |R - group mean R| = (0 + 0 + 1.5 + 1.5) / 4 = 0.75.
# RLOO/AGRO: A = (0, 0, 3, -3); loss = -mean(A * logp) = -(3 * -1 + -3 * -1) / 4 = 0; mean |A| = 1.5.
EXPECTED_LOSS = {"copg": (2.25, 0.75), "rloo": (0.0, 1.5), "agro": (0.0, 1.5)}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_metrics_are_hand_worked_floats(name: str) -> None:
    out = LOSSES[name](**metrics_batch(), beta=1.0)
    loss, advantage_abs_mean = EXPECTED_LOSS[name]
    assert out.loss.item() == pytest.approx(loss, abs=1e-12)
    assert all(isinstance(value, float) for value in out.metrics.values())
    assert out.metrics["loss"] == pytest.approx(loss, abs=1e-12)
    assert out.metrics["reward_mean"] == pytest.approx(1.25)  # (1 + 0 + 3 + 1) / 4
    # population std: sqrt(((-0.25)^2 + (-1.25)^2 + 1.75^2 + (-0.25)^2) / 4) = sqrt(1.1875)
    assert out.metrics["reward_std"] == pytest.approx(1.1875**0.5)
    assert out.metrics["kl"] == pytest.approx(0.25)  # mean h = (0.5 - 0.5 + 0 + 1) / 4
    assert out.metrics["num_groups"] == 2.0 and out.metrics["num_samples"] == 4.0
    assert out.metrics["advantage_abs_mean"] == pytest.approx(advantage_abs_mean)
    assert "is_weight_mean" not in out.metrics


def test_rloo_importance_weight_metrics() -> None:
    # Ratios pi / mu = (1, 2, 4, 0.5), capped at 2: weights (1, 2, 2, 0.5), mean 1.375, max 2.
    inputs = metrics_batch()
    behaviour = inputs["logprobs"] - torch.tensor([1.0, 2.0, 4.0, 0.5], dtype=torch.float64).log()
    out = rloo_loss(
        **inputs, beta=1.0, behaviour_logprobs=behaviour, importance_sampling="truncated", is_cap=2.0
    )
    assert out.metrics["is_weight_mean"] == pytest.approx(1.375)
    assert out.metrics["is_weight_max"] == pytest.approx(2.0)
    # A = (0, 0, 3, -3): loss = -(0 + 0 + 2 * 3 * -1 + 0.5 * -3 * -1) / 4 = -(-6 + 1.5) / 4 = 1.125
    assert out.loss.item() == pytest.approx(1.125)


def test_importance_weights_are_sequence_level_under_averaging() -> None:
    # Summed log-probs (-4, -4, -6, -6) over lengths (2, 2, 3, 3); behaviour chosen so pi / mu =
    # (1.5, 1, 1, 0.25). The averaging operator rescales log pi in the loss, not the probability ratio.
    logprobs = torch.tensor([-4.0, -4.0, -6.0, -6.0], dtype=torch.float64)
    behaviour = logprobs - torch.tensor([1.5, 1.0, 1.0, 0.25], dtype=torch.float64).log()
    out = rloo_loss(
        logprobs,
        logprobs - 0.1,
        torch.tensor([1.0, 0.0, 0.0, 1.0]),
        torch.tensor([0, 0, 1, 1]),
        0.1,
        lengths=torch.tensor([2, 2, 3, 3]),
        average_logprobs=True,
        behaviour_logprobs=behaviour,
        importance_sampling="truncated",
        is_cap=10.0,
    )
    assert out.metrics["is_weight_mean"] == pytest.approx((1.5 + 1 + 1 + 0.25) / 4)
    assert out.metrics["is_weight_max"] == pytest.approx(1.5)


def test_agro_hand_worked_baseline_includes_the_kl_term() -> None:
    # beta = 0.5, one group of 3. h = logp - ref = (-1, -2, -3) - (-2, -2, -2) = (1, 0, -1).
    # R = r - beta h = (1, 1, 0) - 0.5 * (1, 0, -1) = (0.5, 1, 0.5).
    # LOO baselines b = ((1 + 0.5)/2, (0.5 + 0.5)/2, (0.5 + 1)/2) = (0.75, 0.5, 0.75)
    # A = R - b = (-0.25, 0.5, -0.25).
    # loss = -mean(A * logp) = -(0.25 - 1 + 0.75) / 3 = 0; d loss / d logp = -A / 3.
    # (A reward-only baseline would give b = (0.5, 0.5, 1), A = (0, 0.5, -0.5): a different direction.)
    logprobs = torch.tensor([-1.0, -2.0, -3.0], dtype=torch.float64, requires_grad=True)
    out = agro_loss(
        logprobs,
        torch.full((3,), -2.0, dtype=torch.float64),
        torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64),
        torch.tensor([4, 4, 4]),
        0.5,
    )
    assert out.loss.item() == pytest.approx(0.0, abs=1e-15)
    out.loss.backward()
    assert logprobs.grad is not None
    assert torch.allclose(logprobs.grad, torch.tensor([0.25, -0.5, 0.25], dtype=torch.float64) / 3)


def random_batch(seed: int, sizes: list[int]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    return {
        "logprobs": (torch.randn(n, dtype=torch.float64, generator=generator) - 2).requires_grad_(True),
        "ref_logprobs": torch.randn(n, dtype=torch.float64, generator=generator) - 2,
        "rewards": torch.rand(n, dtype=torch.float64, generator=generator),
        "group_ids": torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes)),
    }


def test_copg_pair_gradient_is_twice_rloo_with_k_2() -> None:
    """ALGORITHMS.md: the pair gradient equals RLOO with k = 2 (x2), sample by sample, not only in
    expectation: d/dlogp_i of (1/(2 beta))(R_i - R_j)^2 is -(R_i - R_j); RLOO's is -(R_i - R_j) / 2 per
    sample over N = 2G samples, CoPG's mean over G groups."""
    inputs = random_batch(3, [2] * 5)
    (copg_grad,) = torch.autograd.grad(copg_loss(**inputs, beta=0.4).loss, inputs["logprobs"])
    (rloo_grad,) = torch.autograd.grad(rloo_loss(**inputs, beta=0.4).loss, inputs["logprobs"])
    assert torch.allclose(copg_grad, 2 * rloo_grad, atol=1e-14)


def test_agro_is_rloo_without_importance_weights() -> None:
    """The same estimator (ALGORITHMS.md: 'with on-policy data this is KL-regularised RLOO')."""
    inputs = random_batch(4, [2, 5, 3, 4])
    agro, rloo = agro_loss(**inputs, beta=0.2), rloo_loss(**inputs, beta=0.2)
    assert agro.loss.item() == pytest.approx(rloo.loss.item(), rel=1e-14)
    (agro_grad,) = torch.autograd.grad(agro.loss, inputs["logprobs"])
    (rloo_grad,) = torch.autograd.grad(rloo.loss, inputs["logprobs"])
    assert torch.allclose(agro_grad, rloo_grad, atol=1e-15)


def test_copg_pair_mean_has_no_cancellation_in_float32() -> None:
    """Rewards near 1000 with a spread of ~1: the textbook k sum R^2 - (sum R)^2 loses every digit in
    float32 (R^2 ~ 1e6 with ulp ~ 0.06 per term); the centred form keeps ~4 significant digits."""
    generator = torch.Generator().manual_seed(0)
    rewards = (1000 + torch.rand(12, generator=generator)).float()
    logprobs = (torch.randn(12, generator=generator) - 3).float()
    ref = (torch.randn(12, generator=generator) - 3).float()
    group_ids = torch.arange(3).repeat_interleave(4)
    in_float32 = copg_loss(logprobs, ref, rewards, group_ids, 0.1).loss
    in_float64 = copg_loss(logprobs.double(), ref.double(), rewards.double(), group_ids, 0.1).loss
    assert in_float32.dtype == torch.float32
    assert in_float32.item() == pytest.approx(in_float64.item(), rel=1e-3)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_low_precision_logprobs_are_computed_in_float32(name: str) -> None:
    logprobs = torch.tensor([-1.0, -2.0, -1.5, -0.5], dtype=torch.bfloat16, requires_grad=True)
    out = LOSSES[name](
        logprobs,
        logprobs.detach() - 0.25,
        torch.tensor([1.0, 0.0, 0.5, 0.2]),
        torch.tensor([0, 0, 1, 1]),
        0.5,
    )
    assert out.loss.dtype == torch.float32
    out.loss.backward()
    assert logprobs.grad is not None and logprobs.grad.dtype == torch.bfloat16


def test_the_model_side_sum_is_the_losses_sum() -> None:
    # core/logprobs.py sums a model's token log-probs itself (learner/algorithms stays pure torch):
    # the two must agree, in every dtype, with -inf outside the completion.
    from core.logprobs import sequence_sum

    generator = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        tokens = (-torch.rand(5, 9, generator=generator)).to(dtype)
        tokens[:, 0] = float("-inf")
        mask = torch.rand(5, 9, generator=generator) > 0.4
        mask[:, 0] = False
        assert torch.equal(sequence_sum(tokens, mask), sequence_logprobs(tokens, mask))


def test_sequence_logprobs_ignores_minus_infinity_outside_the_completion() -> None:
    # A -inf at a masked (prompt) position must not turn the sum into NaN: -inf * 0 = NaN, so mask by `where`.
    tokens = torch.tensor([[-float("inf"), -1.0, -0.5]])
    mask = torch.tensor([[0, 1, 1]])
    assert sequence_logprobs(tokens, mask).tolist() == [-1.5]
