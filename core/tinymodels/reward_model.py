"""Build the tiny arithmetic reward model from nothing: a Bradley-Terry scorer of "a+b=" completions.

A two-layer Qwen2ForSequenceClassification (one logit, the byte tokenizer, pad id 257) learns from synthetic
preference pairs: for a prompt "a+b=", the correct sum is preferred over a wrong one. A wrong answer is the
demo policy's typical mistake (the dropped carry, 17+25 -> 32, see tasks.py) or a random number in the
range of sums, so ranking well needs the carry and the magnitude of the sum, not the answer's shape.
(Off-by-one answers would need the whole digit-addition table, which a model this small does not learn
in a minute on two cores.) Input text = prompt + completion, as the server's `reward_model` scorer feeds it.

Loss (Bradley-Terry, as in Ouyang et al. 2022, eq. 1): -log sigmoid(r(x, y_chosen) - r(x, y_rejected)).
"""

import json
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForSequenceClassification

from core.tinymodels.architecture import tiny_qwen2_config
from core.tinymodels.tasks import Problem, flawed_target, split_problems
from core.tinymodels.tokenizer import build_tokenizer

REPORT_FILE = "tandem_model.json"


@dataclass(frozen=True)
class RewardRecipe:
    """Size and schedule of the tiny reward model (~0.1 M parameters; about 20 s on one core).

    Measured held-out pair accuracy: 0.978 (seed 0), 0.972 (seed 1); 256 pairs per step took twice
    as long for 0.978 and 0.944.
    """

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    steps: int = 300
    batch_pairs: int = 128
    lr: float = 5e-3
    n_train: int = 6000
    n_eval: int = 500


def build_reward_model(out_dir: Path | str, seed: int = 0, recipe: RewardRecipe | None = None) -> float:
    """Train, evaluate and save the reward model into `out_dir`; return the held-out pair accuracy.

    Accuracy = fraction of held-out pairs (prompts never seen in training) where the correct answer gets
    the higher reward. Deterministic for `seed` on a given machine.
    """
    recipe = recipe or RewardRecipe()
    started = time.monotonic()
    tokenizer = build_tokenizer()
    train, held_out = split_problems("arithmetic", seed, recipe.n_train, recipe.n_eval)
    with single_thread():
        torch.manual_seed(seed)
        model = Qwen2ForSequenceClassification(_model_config(recipe, tokenizer))
        _train(model, tokenizer, train, recipe, random.Random(seed + 1))
        eval_rng = random.Random(seed + 2)
        eval_pairs = [(p.prompt, p.reference, wrong_answer(p, eval_rng)) for p in held_out]
        accuracy = pair_accuracy(model, tokenizer, eval_pairs)
    print(f"reward model: held-out pair accuracy {accuracy:.3f} ({len(eval_pairs)} pairs)")
    report = {"kind": "reward", "held_out_pair_accuracy": accuracy, "seed": seed, "recipe": asdict(recipe)}
    report["seconds"] = round(time.monotonic() - started, 1)
    save_classifier(model, tokenizer, Path(out_dir), report)
    return accuracy


def wrong_answer(problem: Problem, rng: random.Random) -> str:
    """A wrong sum: the dropped carry (when the sum has a carry) or a random number from 10 to 198."""
    a, b = int(problem.metadata["a"]), int(problem.metadata["b"])  # type: ignore[call-overload]
    total = a + b
    dropped_carry = int(flawed_target("arithmetic", problem, rng, correct_fraction=0.0))
    candidates = [dropped_carry, rng.randint(10, 198)]
    wrong = [candidate for candidate in candidates if candidate != total] or [total + 20]
    return str(rng.choice(wrong))


def _model_config(recipe: RewardRecipe, tokenizer: PreTrainedTokenizerFast) -> Qwen2Config:
    return tiny_qwen2_config(
        tokenizer,
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_layers=recipe.num_layers,
        num_heads=recipe.num_heads,
        num_kv_heads=recipe.num_kv_heads,
        max_positions=64,
        num_labels=1,
    )


def _train(
    model: Qwen2ForSequenceClassification,
    tokenizer: PreTrainedTokenizerFast,
    train: list[Problem],
    recipe: RewardRecipe,
    rng: random.Random,
) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, recipe.steps))
    model.train()
    for _ in range(recipe.steps):
        batch = [rng.choice(train) for _ in range(recipe.batch_pairs)]
        chosen = [p.prompt + p.reference for p in batch]
        rejected = [p.prompt + wrong_answer(p, rng) for p in batch]
        rewards = score_texts(model, tokenizer, chosen + rejected)
        loss = -F.logsigmoid(rewards[: len(batch)] - rewards[len(batch) :]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    model.eval()


def lr_factor(step: int, total: int, warmup: int = 30) -> float:
    """Short warm-up, then a linear decay to zero, so the last steps settle the ranking."""
    return min(1.0, (step + 1) / warmup) * (1 - step / total)


def score_texts(
    model: Qwen2ForSequenceClassification, tokenizer: PreTrainedTokenizerFast, texts: list[str]
) -> torch.Tensor:
    """One reward per text (right padding: the model pools the last non-pad token)."""
    encoded = tokenizer(texts, return_tensors="pt", padding=True)
    return model(**encoded).logits[:, 0]


@torch.no_grad()
def pair_accuracy(
    model: Qwen2ForSequenceClassification,
    tokenizer: PreTrainedTokenizerFast,
    pairs: list[tuple[str, str, str]],
) -> float:
    """Fraction of (prompt, chosen, rejected) pairs where the chosen completion scores strictly higher."""
    model.eval()
    chosen = score_texts(model, tokenizer, [prompt + good for prompt, good, _ in pairs])
    rejected = score_texts(model, tokenizer, [prompt + bad for prompt, _, bad in pairs])
    return round(float((chosen > rejected).float().mean()), 4)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread: these matrices are too small to gain from more, and on shared cores
    spinning worker threads stall each other (measured: steadier and no slower than two threads)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def save_classifier(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, out_dir: Path, report: dict[str, object]
) -> None:
    """save_pretrained + tokenizer; the report is written last, so its presence marks a finished build."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)  # type: ignore[operator]
    tokenizer.save_pretrained(out_dir)
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
