"""Greedy generation with transformers, the reference the vLLM tests compare against."""

import torch


def transformers_greedy(model: torch.nn.Module, tokenizer, prompts: list[str], max_tokens: int) -> list[str]:  # type: ignore[no-untyped-def]
    answers = []
    for prompt in prompts:
        encoded = tokenizer(prompt, return_tensors="pt")
        output = model.generate(
            **encoded, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        answers.append(tokenizer.decode(output[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True))
    return answers
