"""Greedy agreement between vLLM and transformers, the reference the vLLM tests compare against.

Two engines' greedy outputs can differ where the top two logits are within float noise of each
other, and where that happens depends on the model a machine's build produced. So vLLM's greedy
tokens are checked position by position against transformers' log-probs (teacher-forced along
vLLM's own sequence): each chosen token must be an arg-max up to a small tolerance. That holds for
any model; exact text equality holds only for models without near-ties.
"""

from collections.abc import Sequence

import torch

# Near-tie tolerance in nats: far above the engines' log-prob difference (parity tests see ~1e-5),
# far below the gap between a wrong and a right greedy choice on a trained model.
GREEDY_TIE_TOLERANCE = 1e-3


def greedy_disagreements(
    model: torch.nn.Module,
    sequences: Sequence[tuple[Sequence[int], Sequence[int]]],
    tolerance: float = GREEDY_TIE_TOLERANCE,
) -> list[str]:
    """Where the greedy tokens of another engine are not transformers' arg-max (beyond `tolerance`).

    `sequences` holds `(prompt_token_ids, completion_token_ids)` pairs; an empty list means every
    token is a greedy choice of `model` up to near-ties.
    """
    problems = []
    for index, (prompt, completion) in enumerate(sequences):
        if not completion:
            continue
        ids = torch.tensor([list(prompt) + list(completion)])
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
        logprobs = torch.log_softmax(logits, -1)
        chosen = logprobs[torch.arange(len(completion)), torch.tensor(list(completion))]
        gap = logprobs.max(-1).values - chosen
        for position in torch.nonzero(gap > tolerance).flatten().tolist():
            problems.append(
                f"sequence {index}, token {position}: {completion[position]} is {gap[position]:.2e} nats "
                f"below the arg-max {int(logprobs[position].argmax())}"
            )
    return problems
