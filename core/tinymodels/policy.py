"""Build the tiny demo policy from nothing: a small Qwen2 causal LM warm-started on a flawed synthetic task.

The result is a normal Hugging Face model directory (config, safetensors weights, tokenizer,
generation config) that transformers and vLLM load directly, plus `prompts/{train,eval}.jsonl`.
The tokenizer is the byte-level `char` one or a `bpe` one trained on the task's training text
(tokenizer.py); the model's vocabulary is the tokenizer's.
Supervised targets are only partly right (see tasks.py), so held-out accuracy lands well below 100 %
and reinforcement learning has something to fix.
"""

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from core.tinymodels import TokenizerKind
from core.tinymodels.architecture import tiny_qwen2_config
from core.tinymodels.tasks import Problem, TaskName, flawed_target, split_problems, write_jsonl
from core.tinymodels.tokenizer import build_bpe_tokenizer, build_tokenizer, save_tokenizer
from core.tokenization import completion_token_ids, prompt_token_ids


@dataclass(frozen=True)
class PolicyRecipe:
    """Size and training schedule of the tiny policy (defaults: ~0.8 M parameters, ~1-2 min on 2 cores)."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4  # head_dim 32: a size vLLM's CPU attention supports
    num_kv_heads: int = 2
    intermediate_size: int = 384
    max_positions: int = 128
    steps: int = 1200
    batch_size: int = 128
    lr: float = 1e-3
    correct_fraction: float = 0.2
    n_train: int = 2000
    n_eval: int = 200


@dataclass(frozen=True)
class PolicyReport:
    task: str
    tokenizer: str
    vocab_size: int
    parameters: int
    seconds: float
    final_loss: float
    eval_greedy_accuracy: float
    eval_sampled_accuracy: float
    out_dir: str


# Per task: the arithmetic task has ~10k distinct prompts, the code task 432 (3 names x 144 functions).
# In `code` the swap is the majority answer (65 %), so greedy decoding starts near 0 and sampling near 35 %.
TASK_RECIPES: dict[TaskName, PolicyRecipe] = {
    "arithmetic": PolicyRecipe(),
    "code": PolicyRecipe(steps=400, batch_size=64, lr=2e-3, correct_fraction=0.35, n_train=332, n_eval=100),
}


def build_policy(
    task: TaskName,
    out_dir: Path,
    seed: int = 0,
    recipe: PolicyRecipe | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    tokenizer_kind: TokenizerKind = "char",
) -> PolicyReport:
    """Train and save the policy for `task` into `out_dir`; deterministic for `seed`."""
    recipe = recipe or TASK_RECIPES[task]
    started = time.monotonic()
    torch.manual_seed(seed)
    train, held_out = split_problems(task, seed, recipe.n_train, recipe.n_eval)
    tokenizer = make_tokenizer(tokenizer_kind, train)
    model = Qwen2ForCausalLM(_model_config(recipe, tokenizer))
    final_loss = _supervised_warm_start(model, tokenizer, task, train, recipe, seed, progress)
    greedy = exact_match_accuracy(model, tokenizer, held_out, sample=False, seed=seed)
    sampled = exact_match_accuracy(model, tokenizer, held_out, sample=True, seed=seed)
    report = PolicyReport(
        task=task,
        tokenizer=tokenizer_kind,
        vocab_size=len(tokenizer),
        parameters=sum(p.numel() for p in model.parameters()),
        seconds=round(time.monotonic() - started, 1),
        final_loss=round(final_loss, 4),
        eval_greedy_accuracy=greedy,
        eval_sampled_accuracy=sampled,
        out_dir=str(out_dir),
    )
    _save(model, tokenizer, out_dir, train, held_out, report)
    return report


def make_tokenizer(kind: TokenizerKind, train: list[Problem]) -> PreTrainedTokenizerFast:
    """The `char` tokenizer, or a `bpe` one trained on the training prompts and answers only: the
    held-out prompts stay unseen by every part of the build, the tokenizer's merges included."""
    if kind == "char":
        return build_tokenizer()
    return build_bpe_tokenizer(text for problem in train for text in (problem.prompt, problem.reference))


def _model_config(recipe: PolicyRecipe, tokenizer: PreTrainedTokenizerFast) -> Qwen2Config:
    return tiny_qwen2_config(
        tokenizer,
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_layers=recipe.num_layers,
        num_heads=recipe.num_heads,
        num_kv_heads=recipe.num_kv_heads,
        max_positions=recipe.max_positions,
        tie_word_embeddings=True,
    )


def _supervised_warm_start(
    model: Qwen2ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    task: TaskName,
    train: list[Problem],
    recipe: PolicyRecipe,
    seed: int,
    progress: Callable[[int, int, float], None] | None,
) -> float:
    """Next-token loss on the target tokens only; the flawed target is redrawn each time a prompt is used."""
    rng = random.Random(seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, recipe.steps))
    model.train()
    smoothed = float("nan")
    for step in range(recipe.steps):
        batch = [rng.choice(train) for _ in range(recipe.batch_size)]
        targets = [flawed_target(task, problem, rng, recipe.correct_fraction) for problem in batch]
        input_ids, labels = _encode_sft(tokenizer, [p.prompt for p in batch], targets)
        loss = model(
            input_ids=input_ids, attention_mask=input_ids.ne(tokenizer.pad_token_id), labels=labels
        ).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        smoothed = loss.item() if math.isnan(smoothed) else 0.95 * smoothed + 0.05 * loss.item()
        if progress is not None:
            progress(step + 1, recipe.steps, smoothed)
    model.eval()
    return smoothed


def _lr_factor(step: int, total: int, warmup: int = 50, constant_fraction: float = 0.6) -> float:
    """Warm-up, then a constant rate (the model needs it to get past the digit-guessing plateau),
    then a cosine decay over the last 40 % of the steps."""
    if step < warmup:
        return (step + 1) / warmup
    decay_start = int(total * constant_fraction)
    if step < decay_start:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * (step - decay_start) / max(1, total - decay_start)))


def _encode_sft(
    tokenizer: PreTrainedTokenizerFast, prompts: list[str], targets: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded prompt+target+eos ids, and labels that are -100 on the prompt and the padding.

    Tokenised as the actors tokenise samples (core/tokenization.py): the prompt with the tokenizer's
    special tokens (BOS for `bpe`, none for `char`), the target without them and ending with EOS, so the
    warm start is trained on exactly the ids vLLM then conditions on and samples.
    """
    rows, label_rows = [], []
    for prompt, target in zip(prompts, targets, strict=True):
        prompt_ids = prompt_token_ids(tokenizer, prompt)
        target_ids = completion_token_ids(tokenizer, target)
        rows.append(prompt_ids + target_ids)
        label_rows.append([-100] * len(prompt_ids) + target_ids)
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for index, (row, label_row) in enumerate(zip(rows, label_rows, strict=True)):
        input_ids[index, : len(row)] = torch.tensor(row)
        labels[index, : len(row)] = torch.tensor(label_row)
    return input_ids, labels


@torch.no_grad()
def exact_match_accuracy(
    model: Qwen2ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    problems: list[Problem],
    sample: bool,
    seed: int = 0,
    max_new_tokens: int = 12,
) -> float:
    """Fraction of held-out prompts whose completion (greedy or sampled at temperature 1) is the reference."""
    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    correct = 0
    for start in range(0, len(problems), 100):
        chunk = problems[start : start + 100]
        encoded = tokenizer([p.prompt for p in chunk], return_tensors="pt", padding=True)
        output = model.generate(
            **encoded,
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            temperature=1.0 if sample else None,
            top_p=None,
            top_k=None,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        texts = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
        correct += sum(text.strip() == p.reference for text, p in zip(texts, chunk, strict=True))
    tokenizer.padding_side = "right"
    return round(correct / len(problems), 4)


def _save(
    model: Qwen2ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    out_dir: Path,
    train: list[Problem],
    held_out: list[Problem],
    report: PolicyReport,
) -> None:
    """Write into a scratch directory, then rename: a reader never sees a half-written model."""
    scratch = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(scratch, safe_serialization=True)
    save_tokenizer(tokenizer, scratch)
    write_jsonl(train, scratch / "prompts" / "train.jsonl")
    write_jsonl(held_out, scratch / "prompts" / "eval.jsonl")
    (scratch / "tandem_model.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    # An earlier build is moved aside, not deleted first: a process reading it (a test's vLLM engine
    # while another test process builds the same cache) keeps its open files, and the folder is
    # never missing for longer than two renames.
    previous = out_dir.with_name(f".{out_dir.name}.previous-{os.getpid()}")
    if out_dir.exists():
        out_dir.rename(previous)
    scratch.rename(out_dir)
    shutil.rmtree(previous, ignore_errors=True)
