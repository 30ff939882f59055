"""Build the tiny NLI model from nothing: entailment / neutral / contradiction over variable assignments.

A synthetic task with the shape of natural-language inference, small enough to learn in seconds:
    premise "x=5"   hypothesis "x=5" -> entailment     (the premise states it)
                    hypothesis "x=4" -> contradiction  (the premise gives x another value)
                    hypothesis "z=1" -> neutral        (the premise says nothing about z)
The premise holds one fact: with two ("x=5 and y=3") the model must first find the hypothesis's
variable in the premise, a look-up this two-layer model did not learn in 800 steps (held-out accuracy
stuck at 0.67, measured); one fact it learns in 800 steps, about 20 s on one core. Variables are the 52
ASCII letters (520 distinct entailment pairs): held-out pairs are kept out of training, and with 19
names the 300 held-out examples would take most of the 190 entailment pairs out of it.
The model is a two-layer Qwen2ForSequenceClassification with three labels, id2label
{0: "entailment", 1: "neutral", 2: "contradiction"}, and the byte tokenizer with a pair template
"premise <eos> hypothesis", so `tokenizer(premise, hypothesis)` works as with any NLI model and the
reward server's `entailment` scorer needs nothing special for it.
"""

import random
import string
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import processors
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForSequenceClassification

from core.tinymodels.architecture import tiny_qwen2_config
from core.tinymodels.reward_model import lr_factor, save_classifier, single_thread
from core.tinymodels.tokenizer import build_tokenizer

LABELS = {0: "entailment", 1: "neutral", 2: "contradiction"}
VARIABLES = string.ascii_letters

Example = tuple[str, str, int]  # (premise, hypothesis, label id)


@dataclass(frozen=True)
class NliRecipe:
    """Size and schedule of the tiny NLI model (~0.1 M parameters; about 20 s on one core)."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    steps: int = 800
    batch_size: int = 128
    lr: float = 5e-3
    n_eval: int = 300


def build_nli_model(out_dir: Path | str, seed: int = 0, recipe: NliRecipe | None = None) -> float:
    """Train, evaluate and save the NLI model into `out_dir`; return the held-out accuracy.

    Held-out examples never occur in training. Deterministic for `seed` on a given machine.
    """
    recipe = recipe or NliRecipe()
    started = time.monotonic()
    tokenizer = nli_tokenizer()
    eval_rng = random.Random(seed + 2)
    held_out = [make_example(eval_rng) for _ in range(recipe.n_eval)]
    with single_thread():
        torch.manual_seed(seed)
        model = Qwen2ForSequenceClassification(_model_config(recipe, tokenizer))
        _train(model, tokenizer, recipe, random.Random(seed + 1), exclude={(p, h) for p, h, _ in held_out})
        accuracy = nli_accuracy(model, tokenizer, held_out)
    print(f"nli model: held-out accuracy {accuracy:.3f} ({len(held_out)} examples)")
    report = {"kind": "nli", "held_out_accuracy": accuracy, "seed": seed, "recipe": asdict(recipe)}
    report["seconds"] = round(time.monotonic() - started, 1)
    save_classifier(model, tokenizer, Path(out_dir), report)
    return accuracy


def make_example(rng: random.Random) -> Example:
    """A one-fact premise and a one-fact hypothesis, each label equally likely."""
    stated, unstated = rng.sample(VARIABLES, 2)
    value = rng.randint(0, 9)
    premise = f"{stated}={value}"
    label = rng.randrange(3)
    if label == 0:
        hypothesis = premise
    elif label == 1:
        hypothesis = f"{unstated}={rng.randint(0, 9)}"
    else:
        hypothesis = f"{stated}={rng.choice([v for v in range(10) if v != value])}"
    return premise, hypothesis, label


def nli_tokenizer() -> PreTrainedTokenizerFast:
    """The byte tokenizer with an end-of-text token between premise and hypothesis in pair inputs."""
    tokenizer = build_tokenizer()
    eos = (tokenizer.eos_token, tokenizer.eos_token_id)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="$A", pair=f"$A:0 {eos[0]}:0 $B:1", special_tokens=[eos]
    )
    return tokenizer


def _model_config(recipe: NliRecipe, tokenizer: PreTrainedTokenizerFast) -> Qwen2Config:
    return tiny_qwen2_config(
        tokenizer,
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_layers=recipe.num_layers,
        num_heads=recipe.num_heads,
        num_kv_heads=recipe.num_kv_heads,
        max_positions=64,
        num_labels=len(LABELS),
        id2label=LABELS,
        label2id={label: index for index, label in LABELS.items()},
    )


def _train(
    model: Qwen2ForSequenceClassification,
    tokenizer: PreTrainedTokenizerFast,
    recipe: NliRecipe,
    rng: random.Random,
    exclude: set[tuple[str, str]],
) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, recipe.steps))
    model.train()
    for _ in range(recipe.steps):
        batch: list[Example] = []
        while len(batch) < recipe.batch_size:
            example = make_example(rng)
            if example[:2] not in exclude:
                batch.append(example)
        logits = classify(model, tokenizer, batch)
        loss = F.cross_entropy(logits, torch.tensor([label for _, _, label in batch]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    model.eval()


def classify(
    model: Qwen2ForSequenceClassification, tokenizer: PreTrainedTokenizerFast, examples: list[Example]
) -> torch.Tensor:
    encoded = tokenizer(
        [premise for premise, _, _ in examples],
        [hypothesis for _, hypothesis, _ in examples],
        return_tensors="pt",
        padding=True,
    )
    return model(**encoded).logits


@torch.no_grad()
def nli_accuracy(
    model: Qwen2ForSequenceClassification, tokenizer: PreTrainedTokenizerFast, examples: list[Example]
) -> float:
    model.eval()
    predicted = classify(model, tokenizer, examples).argmax(dim=-1)
    gold = torch.tensor([label for _, _, label in examples])
    return round(float((predicted == gold).float().mean()), 4)
