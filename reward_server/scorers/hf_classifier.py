"""A Hugging Face sequence-classification model at a local path, run in batches off the event loop.

Shared by the `reward_model` and `entailment` scorers. One worker thread per model: forward passes
run one at a time (torch already spreads one pass over the cores; two at once would only contend),
and the event loop keeps serving health checks and other scorers meanwhile.
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


class SequenceClassifier:
    """Logits for texts (or text pairs), `batch_size` at a time, truncated to `max_length` tokens."""

    def __init__(self, path: Path, batch_size: int, max_length: int, truncation_side: str = "right") -> None:
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} is not a Hugging Face model directory (no config.json)")
        # local_files_only: a missing file is an error here, never a download from a model hub.
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.tokenizer.truncation_side = truncation_side
        self.model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True).eval()
        # Batches need a pad token, and the model must know it to pool the last real token.
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size = batch_size
        self.max_length = max_length
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"classifier-{path.name}")

    @property
    def id2label(self) -> dict[int, str]:
        return dict(self.model.config.id2label)

    @property
    def num_labels(self) -> int:
        return int(self.model.config.num_labels)

    async def logits(self, texts: list[str], pairs: list[str] | None = None) -> torch.Tensor:
        """Float32 logits of shape [len(texts), num_labels]; `pairs` are second segments (hypotheses)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._logits, texts, pairs)

    @torch.inference_mode()
    def _logits(self, texts: list[str], pairs: list[str] | None) -> torch.Tensor:
        outputs = []
        for start in range(0, len(texts), self.batch_size):
            end = start + self.batch_size
            encoded = self.tokenizer(
                texts[start:end],
                pairs[start:end] if pairs is not None else None,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            outputs.append(self.model(**encoded).logits.float())
        return torch.cat(outputs) if outputs else torch.empty(0, self.num_labels)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
