"""The frozen reference model: separate weights, no optimizer state, log-probs cached per sample.
With LoRA (`model.lora`) it is the policy module itself with its adapter switched off
(`ReferenceModel.of_module`, learner/lora.py), so no second copy of the weights is held.

A group replayed many times costs one reference forward pass: the cache key is (group id, sample index,
hash of the row's tokens), which stays the same for a group's whole life in the buffer.
"""

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from core.schemas import TrainBatch
from learner.logprobs import completion_logprobs

RowKey = tuple[str, int, int]  # group id, sample index, hash of the row's tokens (step.row_keys)


class ReferenceModel:
    def __init__(
        self,
        path: Path,
        dtype: torch.dtype = torch.float32,
        cache_size: int = 200_000,
        device: str | torch.device = "cpu",
    ):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        model.requires_grad_(False)
        self._hold(model, device, cache_size)

    @classmethod
    def of_module(
        cls, model: torch.nn.Module, cache_size: int = 200_000, device: str | torch.device = "cpu"
    ) -> "ReferenceModel":
        """A reference computed by a module already in memory (a LoRA policy with its adapter off):
        nothing is loaded or copied, and the module's parameters are left as they are."""
        reference = cls.__new__(cls)
        reference._hold(model, device, cache_size)
        return reference

    def _hold(self, model: torch.nn.Module, device: str | torch.device, cache_size: int) -> None:
        self.device = torch.device(device)
        self.model = model
        self.cache: dict[RowKey, float] = {}
        self.cache_size = cache_size
        self.hits = self.misses = 0

    @torch.no_grad()
    def logprobs(
        self, batch: TrainBatch, keys: list[RowKey], rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[R] reference log-probs of the batch's `rows` (default: all); `keys[i]` identifies `rows[i]`."""
        indices = list(range(batch.input_ids.shape[0])) if rows is None else rows.tolist()
        if len(keys) != len(indices):
            raise ValueError(f"{len(keys)} cache keys for {len(indices)} rows")
        missing = [i for i, key in enumerate(keys) if key not in self.cache]
        if missing:
            selected = torch.tensor([indices[i] for i in missing])
            width = int(batch.attention_mask[selected].sum(dim=1).max())  # right-padded: trim the rest
            values = completion_logprobs(
                self.model,
                batch.input_ids[selected, :width].to(self.device),
                batch.attention_mask[selected, :width].to(self.device),
                batch.completion_mask[selected, :width].to(self.device),
            ).cpu()
            if len(self.cache) + len(missing) > self.cache_size:
                self.cache.clear()  # simple and bounded; a miss only costs a forward pass
            self.cache.update((keys[i], float(value)) for i, value in zip(missing, values, strict=True))
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        return torch.tensor([self.cache[key] for key in keys], dtype=torch.float64)
