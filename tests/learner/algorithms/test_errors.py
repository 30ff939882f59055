"""Bad input gets a clear error naming what is wrong, for every loss."""

import math

import pytest
import torch

from learner.algorithms import LOSSES, copg_loss, rloo_loss


def batch(n: int = 4) -> dict[str, torch.Tensor]:
    return {
        "logprobs": torch.full((n,), -1.0),
        "ref_logprobs": torch.full((n,), -1.0),
        "rewards": torch.arange(n, dtype=torch.float32),
        "group_ids": torch.tensor([0, 0, 1, 1][:n]),
    }


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_group_of_one_is_named(name: str) -> None:
    inputs = batch(3)
    inputs["group_ids"] = torch.tensor([5, 5, 9])
    with pytest.raises(ValueError, match=r"group id\(s\) \[9\] have 1"):
        LOSSES[name](**inputs, beta=0.1)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_mismatched_lengths_name_the_inputs(name: str) -> None:
    inputs = batch()
    inputs["rewards"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"inputs differ in length: .*'rewards': 3"):
        LOSSES[name](**inputs, beta=0.1)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_rewards_name_the_index(name: str, bad: float) -> None:
    inputs = batch()
    inputs["rewards"] = torch.tensor([0.0, 1.0, bad, 0.0])
    with pytest.raises(ValueError, match=r"rewards has non-finite values at index \[2\]"):
        LOSSES[name](**inputs, beta=0.1)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_two_dimensional_input_is_refused(name: str) -> None:
    inputs = batch()
    inputs["logprobs"] = torch.zeros(4, 1)
    with pytest.raises(ValueError, match=r"logprobs must be 1-D .* shape \(4, 1\)"):
        LOSSES[name](**inputs, beta=0.1)


@pytest.mark.parametrize("name", ["copg", "agro"])
def test_losses_that_need_positive_beta_say_so(name: str) -> None:
    for beta in (0.0, -1.0):
        with pytest.raises(ValueError, match=f"{name}_loss: beta must be > 0"):
            LOSSES[name](**batch(), beta=beta)


def test_rloo_accepts_zero_beta_but_not_negative() -> None:
    assert math.isfinite(rloo_loss(**batch(), beta=0.0).loss.item())
    with pytest.raises(ValueError, match="rloo_loss: beta must be >= 0"):
        rloo_loss(**batch(), beta=-0.1)


def test_rloo_options_are_checked() -> None:
    with pytest.raises(ValueError, match="importance_sampling must be one of"):
        rloo_loss(**batch(), beta=0.1, importance_sampling="full")
    with pytest.raises(ValueError, match="needs behaviour_logprobs"):
        rloo_loss(**batch(), beta=0.1, importance_sampling="truncated")
    with pytest.raises(ValueError, match="is_cap must be > 0"):
        rloo_loss(
            **batch(), beta=0.1, importance_sampling="truncated", behaviour_logprobs=torch.zeros(4), is_cap=0
        )


def test_unknown_options_are_type_errors_naming_them() -> None:
    with pytest.raises(TypeError, match="importance_sampling"):
        copg_loss(**batch(), beta=0.1, importance_sampling="truncated")


def test_averaging_needs_positive_lengths() -> None:
    with pytest.raises(ValueError, match="needs `lengths`"):
        copg_loss(**batch(), beta=0.1, average_logprobs=True)
    with pytest.raises(ValueError, match=r"lengths must be positive, got \[0\]"):
        copg_loss(**batch(), beta=0.1, average_logprobs=True, lengths=torch.tensor([1, 0, 2, 3]))


def test_empty_batch() -> None:
    with pytest.raises(ValueError, match="empty batch"):
        copg_loss(torch.zeros(0), torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.1)
