"""Bad input gets a clear error naming what is wrong, for every loss (issue 3, item 4)."""

import math

import pytest
import torch

from learner.algorithms import LOSSES, agro_loss, copg_loss, rloo_loss
from learner.algorithms.bandit import LossFn

NAMES = sorted(LOSSES)


def batch(n: int = 4) -> dict[str, torch.Tensor]:
    """Two valid groups of two: the baseline every test breaks in one place."""
    return {
        "logprobs": torch.full((n,), -1.0),
        "ref_logprobs": torch.full((n,), -1.0),
        "rewards": torch.arange(n, dtype=torch.float32),
        "group_ids": torch.tensor([0, 0, 1, 1][:n]),
    }


@pytest.mark.parametrize("name", NAMES)
def test_the_valid_batch_passes(name: str) -> None:
    assert math.isfinite(LOSSES[name](**batch(), beta=0.1).loss.item())


@pytest.mark.parametrize("name", NAMES)
def test_group_of_one_is_named(name: str) -> None:
    inputs = batch(3)
    inputs["group_ids"] = torch.tensor([5, 5, 9])
    with pytest.raises(ValueError, match=rf"{name}_loss: .*group id\(s\) \[9\] have 1"):
        LOSSES[name](**inputs, beta=0.1)


@pytest.mark.parametrize("name", NAMES)
def test_mismatched_lengths_name_the_tensors_and_shapes(name: str) -> None:
    inputs = batch()
    inputs["rewards"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"inputs differ in length: logprobs \(4,\), .*rewards \(3,\)"):
        LOSSES[name](**inputs, beta=0.1)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_rewards_name_the_index(name: str, bad: float) -> None:
    inputs = batch()
    inputs["rewards"] = torch.tensor([0.0, 1.0, bad, 0.0])
    with pytest.raises(ValueError, match=r"rewards has non-finite values at index \[2\]"):
        LOSSES[name](**inputs, beta=0.1)


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_logprobs_name_the_index(name: str) -> None:
    inputs = batch()
    inputs["ref_logprobs"] = torch.tensor([-1.0, -math.inf, -1.0, -1.0])
    with pytest.raises(ValueError, match=r"ref_logprobs has non-finite values at index \[1\]"):
        LOSSES[name](**inputs, beta=0.1)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("field", ["logprobs", "rewards", "group_ids"])
def test_non_1d_inputs_are_refused(name: str, field: str) -> None:
    inputs = batch()
    inputs[field] = inputs[field].reshape(4, 1)
    with pytest.raises(ValueError, match=rf"{field} must be 1-D .* shape \(4, 1\)"):
        LOSSES[name](**inputs, beta=0.1)


@pytest.mark.parametrize("name", NAMES)
def test_float_group_ids_are_refused(name: str) -> None:
    inputs = batch()
    inputs["group_ids"] = inputs["group_ids"].float()
    with pytest.raises(ValueError, match="group_ids must be an integer tensor"):
        LOSSES[name](**inputs, beta=0.1)


@pytest.mark.parametrize("name", ["copg", "agro"])
@pytest.mark.parametrize("beta", [0.0, -1.0])
def test_losses_that_need_positive_beta_say_which(name: str, beta: float) -> None:
    with pytest.raises(ValueError, match=f"{name}_loss: beta must be > 0"):
        LOSSES[name](**batch(), beta=beta)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("beta", [math.nan, math.inf])
def test_non_finite_beta_is_refused(name: str, beta: float) -> None:
    with pytest.raises(ValueError, match="beta must be a finite number"):
        LOSSES[name](**batch(), beta=beta)


def test_rloo_accepts_zero_beta_but_not_negative() -> None:
    assert math.isfinite(rloo_loss(**batch(), beta=0.0).loss.item())
    with pytest.raises(ValueError, match="rloo_loss: beta must be >= 0"):
        rloo_loss(**batch(), beta=-0.1)


def test_bad_importance_sampling_value() -> None:
    with pytest.raises(ValueError, match=r"importance_sampling must be one of \('none', 'truncated'\)"):
        rloo_loss(**batch(), beta=0.1, importance_sampling="full")


def test_truncated_importance_sampling_needs_behaviour_logprobs_and_a_positive_cap() -> None:
    with pytest.raises(ValueError, match="needs behaviour_logprobs"):
        rloo_loss(**batch(), beta=0.1, importance_sampling="truncated")
    with pytest.raises(ValueError, match="is_cap must be > 0, got 0"):
        rloo_loss(
            **batch(), beta=0.1, importance_sampling="truncated", behaviour_logprobs=torch.zeros(4), is_cap=0
        )
    with pytest.raises(ValueError, match=r"inputs differ in length: .*behaviour_logprobs \(3,\)"):
        rloo_loss(**batch(), beta=0.1, importance_sampling="truncated", behaviour_logprobs=torch.zeros(3))


@pytest.mark.parametrize(
    ("loss_fn", "option"),
    [
        (copg_loss, "importance_sampling"),  # an RLOO-only option passed to CoPG
        (agro_loss, "behaviour_logprobs"),  # AGRO must never take behaviour log-probs
        (rloo_loss, "average_logprob"),  # a typo of average_logprobs
        (copg_loss, "kl_coef"),
    ],
)
def test_unknown_options_are_type_errors_naming_them(loss_fn: LossFn, option: str) -> None:
    with pytest.raises(TypeError, match=option):
        loss_fn(**batch(), beta=0.1, **{option: None})


@pytest.mark.parametrize("name", NAMES)
def test_averaging_without_lengths(name: str) -> None:
    with pytest.raises(ValueError, match=f"{name}_loss: average_logprobs=True needs `lengths`"):
        LOSSES[name](**batch(), beta=0.1, average_logprobs=True)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad_length", [0, -3])
def test_non_positive_lengths(name: str, bad_length: int) -> None:
    lengths = torch.tensor([1, bad_length, 2, 3])
    with pytest.raises(ValueError, match=rf"lengths must be positive, got \[{bad_length}\] at index \[1\]"):
        LOSSES[name](**batch(), beta=0.1, average_logprobs=True, lengths=lengths)


@pytest.mark.parametrize("name", NAMES)
def test_lengths_of_the_wrong_size(name: str) -> None:
    with pytest.raises(ValueError, match=r"lengths \(3,\)"):
        LOSSES[name](**batch(), beta=0.1, average_logprobs=True, lengths=torch.tensor([1, 2, 3]))


def test_empty_batch() -> None:
    with pytest.raises(ValueError, match="empty batch"):
        copg_loss(torch.zeros(0), torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.1)
