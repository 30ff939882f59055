"""The frozen reference model: separate weights, no optimizer state, log-probs cached per sample.

A group replayed many times costs one reference forward pass: the cache key is (group id, sample index),
which the buffer keeps stable for a group's whole life.
"""

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from learner.logprobs import completion_logprobs
from services.schemas import TrainBatch


class ReferenceModel:
    def __init__(
        self,
        path: Path,
        dtype: torch.dtype = torch.float32,
        cache_size: int = 200_000,
        device: str | torch.device = "cpu",
    ):
        self.device = torch.device(device)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(self.device).eval()
        self.model.requires_grad_(False)
        self.cache: dict[tuple[str, int], float] = {}
        self.cache_size = cache_size
        self.hits = self.misses = 0

    @torch.no_grad()
    def logprobs(self, batch: TrainBatch, keys: list[tuple[str, int]]) -> torch.Tensor:
        """[B] reference log-probs of the batch's rows (`keys[i]` identifies row i)."""
        missing = [row for row, key in enumerate(keys) if key not in self.cache]
        if missing:
            rows = torch.tensor(missing)
            values = completion_logprobs(
                self.model,
                batch.input_ids[rows].to(self.device),
                batch.attention_mask[rows].to(self.device),
                batch.completion_mask[rows].to(self.device),
            ).cpu()
            if len(self.cache) + len(missing) > self.cache_size:
                self.cache.clear()  # simple and bounded; a miss only costs a forward pass
            self.cache.update((keys[row], float(value)) for row, value in zip(missing, values, strict=True))
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        return torch.tensor([self.cache[key] for key in keys], dtype=torch.float32)
