"""Per-token and per-sequence log-probs for the policy and the reference, computed in one place: the
learner's step and reference model, and the actors' reference model (`model.reference_on: actors`)
use these functions, so a reference log-prob means the same number whichever side computed it.

Position t of `token_logprobs` holds log pi(x_t | x_<t) (position 0 holds 0: nothing predicts the first
token). Logits are turned into log-probs in float32 whatever the model's dtype, and sequence sums
accumulate in float32 (`sequence_sum`), so bf16 training keeps honest KL terms.

`temperature` gives the log-probs of the tempered policy pi_T = softmax(logits / T): the distribution
vLLM samples from at temperature T, and whose log-probs it returns with
`logprobs_mode="processed_logprobs"` (actors/engine.py). T = 1 is the policy pi itself.
"""

from collections.abc import Sequence

import torch


def sequence_sum(token_logprobs: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """[B]: the token log-probs summed over the completion positions, in float32 or wider; masked
    with `where`, since prompt or padding positions may hold -inf (and -inf * 0 is NaN). The same sum
    as learner.algorithms.sequence_logprobs, which stays pure torch for the losses (a test holds the
    two equal)."""
    accumulate = torch.promote_types(token_logprobs.dtype, torch.float32)
    return torch.where(completion_mask.bool(), token_logprobs.to(accumulate), 0.0).sum(dim=-1)


def _chosen(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """[B, T] log-prob of each token under softmax(logits / temperature) given its prefix."""
    scaled = logits[:, :-1].float()
    if temperature != 1.0:
        scaled = scaled / temperature  # as vLLM's sampler does, in float32, before the softmax
    chosen = torch.log_softmax(scaled, dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return torch.nn.functional.pad(chosen, (1, 0), value=0.0)


def token_logprobs(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """[B, T] log-probs of each token given its prefix, under the policy at `temperature`."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask.long()).logits
    return _chosen(logits, input_ids, temperature)


def completion_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """[B] log pi_T(y | x): token log-probs summed over the completion positions."""
    return sequence_sum(token_logprobs(model, input_ids, attention_mask, temperature), completion_mask)


def completion_logprobs_at(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    temperatures: Sequence[float],
) -> torch.Tensor:
    """[B, len(temperatures)]: `completion_logprobs` at each temperature, from one forward pass (the
    learner needs log pi for the KL terms and log pi_T for RLOO's score function and importance ratio)."""
    # Cast once for all temperatures: a float32 copy of [B, T, vocab] logits is the largest tensor of
    # the step on a big-vocabulary model (`_chosen`'s own cast is then a no-op).
    logits = model(input_ids=input_ids, attention_mask=attention_mask.long()).logits.float()
    columns = [
        sequence_sum(_chosen(logits, input_ids, temperature), completion_mask) for temperature in temperatures
    ]
    return torch.stack(columns, dim=1)
