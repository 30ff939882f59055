"""Per-token and per-sequence log-probs for the policy and the reference, computed in one place.

Position t of `token_logprobs` holds log pi(x_t | x_<t) (position 0 holds 0: nothing predicts the first
token). Logits are turned into log-probs in float32 whatever the model's dtype, and sequence sums
accumulate in float32 (learner.algorithms.sequence_logprobs), so bf16 training keeps honest KL terms.
"""

import torch

from learner.algorithms import sequence_logprobs


def token_logprobs(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """[B, T] log-probs of each token given its prefix."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask.long()).logits
    predicted = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    chosen = predicted.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return torch.nn.functional.pad(chosen, (1, 0), value=0.0)


def completion_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
) -> torch.Tensor:
    """[B] log pi(y | x): token log-probs summed over the completion positions."""
    return sequence_logprobs(token_logprobs(model, input_ids, attention_mask), completion_mask)
