"""The frozen reference model: separate weights, no optimizer state, log-probs cached per sample.
With LoRA (`model.lora`) it is the policy module itself with its adapter switched off
(`ReferenceModel.of_module`, learner/lora.py), so no second copy of the weights is held.

A group replayed many times costs one reference forward pass: the cache key is (group id, sample index,
hash of the row's tokens), which stays the same for a group's whole life in the buffer.

Where it runs (`model.reference_on`): in the learner, or in each generator actor, which then stamps
every sample with its reference log-prob and the model's identity before the push (`score_samples`),
as OpenRLHF runs its reference model beside generation rather than in the training step. The learner
takes a stamped value only when the identity is its own reference's (`reference_identity`: the
model's files and dtype, so the same weights on two machines agree, and a run resumed with another
`model.ref_path` recomputes); every other row, such as an offline group's, it computes itself.
"""

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

import msgspec
import torch
from transformers import AutoModelForCausalLM

from core.logprobs import completion_logprobs
from core.schemas import Sample, TrainBatch, pad_samples

# Rows x positions of one actor-side forward pass: bounds its activations like the learner's
# micro-batches (`learner.micro_batch_tokens`) do.
SCORE_TOKEN_BUDGET = 16384
FINGERPRINT_BYTES = 1 << 16  # of each weight file, from its start and its end


def reference_identity(path: Path, dtype: torch.dtype) -> str:
    """A short digest naming the reference model: its config, each weight file's name, size and first
    and last 64 KiB, and the dtype it is computed in (not the directory's path: a cluster's nodes may
    hold the same files in different places). Cheap to take at start-up even for large checkpoints."""
    path = Path(path)
    digest = hashlib.sha256(str(dtype).encode())
    config = path / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    weights = sorted([*path.glob("*.safetensors"), *path.glob("*.bin")])
    for weight in weights:
        size = weight.stat().st_size
        digest.update(f"{weight.name}:{size}".encode())
        with weight.open("rb") as handle:
            digest.update(handle.read(FINGERPRINT_BYTES))
            handle.seek(max(0, size - FINGERPRINT_BYTES))
            digest.update(handle.read(FINGERPRINT_BYTES))
    return digest.hexdigest()[:16]


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
        self._hold(model, device, cache_size, reference_identity(path, dtype))

    @classmethod
    def of_module(
        cls,
        model: torch.nn.Module,
        cache_size: int = 200_000,
        device: str | torch.device = "cpu",
        identity: str | None = None,
    ) -> "ReferenceModel":
        """A reference computed by a module already in memory (a LoRA policy with its adapter off):
        nothing is loaded or copied, and the module's parameters are left as they are. `identity`:
        the `reference_identity` of the weights it computes with (the LoRA base's), if known."""
        reference = cls.__new__(cls)
        reference._hold(model, device, cache_size, identity)
        return reference

    def _hold(
        self, model: torch.nn.Module, device: str | torch.device, cache_size: int, identity: str | None
    ) -> None:
        self.device = torch.device(device)
        self.model = model
        self.identity = identity
        self.cache: dict[RowKey, float] = {}
        self.cache_size = cache_size
        self.hits = self.misses = 0
        self.provided = 0  # rows whose value came stamped by an actor (`score_samples`)

    @torch.no_grad()
    def score_samples(self, samples: Sequence[Sample]) -> list[Sample]:
        """The samples stamped with their reference log-probs (`ref_logprob`, the sum over completion
        tokens, as `logprobs` computes it) and this model's identity (`ref_model`): the actors' side."""
        if self.identity is None:
            raise ValueError(
                "a reference without an identity cannot stamp samples (the learner could not check them)"
            )
        values: list[float] = []
        lengths = [len(s.prompt_token_ids) + len(s.completion_token_ids) for s in samples]
        for chunk in _chunks(lengths, SCORE_TOKEN_BUDGET):
            # Pad id 0: right padding is never attended, so its value does not matter.
            input_ids, attention, completion = pad_samples([samples[i] for i in chunk], pad_token_id=0)
            found = completion_logprobs(
                self.model, input_ids.to(self.device), attention.to(self.device), completion.to(self.device)
            )
            values.extend(found.double().cpu().tolist())
        return [
            msgspec.structs.replace(sample, ref_logprob=value, ref_model=self.identity)
            for sample, value in zip(samples, values, strict=True)
        ]

    @torch.no_grad()
    def logprobs(
        self, batch: TrainBatch, keys: list[RowKey], rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[R] reference log-probs of the batch's `rows` (default: all); `keys[i]` identifies `rows[i]`."""
        indices = list(range(batch.input_ids.shape[0])) if rows is None else rows.tolist()
        if len(keys) != len(indices):
            raise ValueError(f"{len(keys)} cache keys for {len(indices)} rows")
        found: dict[int, float] = {}  # position in `keys` -> value
        stamped = batch.reference_logprobs  # by the actors, with this reference (core/schemas.py)
        for i, (key, row) in enumerate(zip(keys, indices, strict=True)):
            if key in self.cache:
                found[i] = self.cache[key]
                self.hits += 1
            elif stamped is not None and not math.isnan(value := float(stamped[row])):
                found[i] = value
                self.provided += 1
        missing = [i for i in range(len(keys)) if i not in found]
        if missing:
            selected = torch.tensor([indices[i] for i in missing])
            width = int(batch.attention_mask[selected].sum(dim=1).max())  # right-padded: trim the rest
            values = completion_logprobs(
                self.model,
                batch.input_ids[selected, :width].to(self.device),
                batch.attention_mask[selected, :width].to(self.device),
                batch.completion_mask[selected, :width].to(self.device),
            ).cpu()
            found.update((i, float(value)) for i, value in zip(missing, values, strict=True))
            self.misses += len(missing)
        fresh = [i for i in range(len(keys)) if keys[i] not in self.cache]
        if len(self.cache) + len(fresh) > self.cache_size:
            self.cache.clear()  # simple and bounded; a miss only costs a forward pass
        self.cache.update((keys[i], found[i]) for i in fresh)
        return torch.tensor([found[i] for i in range(len(keys))], dtype=torch.float64)


def _chunks(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Consecutive row indices whose padded size (rows x longest) fits the budget; a longer row alone."""
    chunks: list[list[int]] = [[]]
    longest = 0
    for index, length in enumerate(lengths):
        if chunks[-1] and (len(chunks[-1]) + 1) * max(longest, length) > token_budget:
            chunks.append([])
            longest = 0
        chunks[-1].append(index)
        longest = max(longest, length)
    return [chunk for chunk in chunks if chunk]
