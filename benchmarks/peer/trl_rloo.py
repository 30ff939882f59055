"""The TRL side of `tandem bench peer`: RLOOTrainer on the tiny arithmetic task, logging JSON lines.

Run by the TRL virtualenv's interpreter (`peer_bench.py` builds it), which has TRL, transformers and
CPU torch but not Tandem, so nothing here imports Tandem: the exact-match rule is a copy of
`reward_server/scorers/exact_match.py` (its regex and tolerance arrive in the spec, read from the same
config Tandem uses), and the held-out evaluation mirrors Tandem's (greedy, the same eval prompts,
at the start, every `eval_every` steps and at the end, reward = the same exact-match rule).

    trl-venv/bin/python benchmarks/peer/trl_rloo.py SPEC.json

SPEC.json (written by peer_bench.py): model, train_prompts, eval_prompts, reward {pattern, tolerance},
eval_every, log (the JSON-lines file to write) and trl (RLOOConfig keyword arguments). Each log line
has the wall-clock `time` (epoch seconds), so the caller measures from the moment it started us:
  {"event": "start"}                     the interpreter reached this script
  {"event": "ready"}                     model, tokenizer and trainer built
  {"event": "step", "step": N}           optimizer step N done
  {"event": "eval", "step": N, "eval_reward_mean": r, "eval_items": k, "eval_seconds": s}
  {"event": "end", "steps": N}
"""

import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

STARTED = time.time()  # before the heavy imports below: they are part of start-up


class JsonLog:
    """Appends one JSON object per line, flushed, so a killed run keeps what it logged."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = path.open("w", encoding="utf-8")

    def write(self, event: str, moment: float | None = None, **fields: Any) -> None:
        row = {"event": event, "time": time.time() if moment is None else moment} | fields
        self.handle.write(json.dumps(row) + "\n")
        self.handle.flush()


def parse_number(text: str) -> float | None:
    """Tandem's `parse_number`: a finite float from "42", "-3.5", "1e3" or "1,000"; else None."""
    try:
        value = float(text)
    except ValueError:
        try:
            value = float(text.replace(",", ""))
        except ValueError:
            return None
    return value if math.isfinite(value) else None


def exact_match(completion: str, reference: str, pattern: re.Pattern[str], tolerance: float | None) -> float:
    """Tandem's exact-match rule: the regex's first group (or whole match) equals the reference as text,
    or as a number within `tolerance`; no match scores 0."""
    match = pattern.search(completion)
    answer = None if match is None else match.group(1 if pattern.groups else 0)
    same_text = answer is not None and answer.strip() == reference.strip()
    if tolerance is None or same_text:
        return 1.0 if same_text else 0.0
    expected = parse_number(reference)
    value = None if answer is None else parse_number(answer)
    return 1.0 if expected is not None and value is not None and abs(value - expected) <= tolerance else 0.0


def read_prompts(path: Path) -> list[dict[str, str]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{"prompt": row["prompt"], "reference": str(row["reference"])} for row in rows]


def main(spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    log = JsonLog(Path(spec["log"]))
    log.write("start", moment=STARTED)

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import RLOOConfig, RLOOTrainer

    pattern = re.compile(spec["reward"]["pattern"])
    tolerance = spec["reward"]["tolerance"]

    def reward(completions: list[str], reference: list[str], **_: Any) -> list[float]:
        """RLOOTrainer passes the dataset's other columns by name: `reference` is ours."""
        return [exact_match(c, r, pattern, tolerance) for c, r in zip(completions, reference, strict=True)]

    train = read_prompts(Path(spec["train_prompts"]))
    evaluation = read_prompts(Path(spec["eval_prompts"]))
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    max_new_tokens = spec["trl"]["max_completion_length"]

    def evaluate() -> tuple[float, int]:
        """Greedy completions of every eval prompt in one left-padded batch, scored by the same rule."""
        was_training = model.training
        model.eval()
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"  # decoder-only generation continues from the right end
        try:
            batch = tokenizer([row["prompt"] for row in evaluation], return_tensors="pt", padding=True)
            with torch.no_grad():
                output = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            texts = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        finally:
            tokenizer.padding_side = side
            model.train(was_training)
        scores = [
            exact_match(t, row["reference"], pattern, tolerance)
            for t, row in zip(texts, evaluation, strict=True)
        ]
        return sum(scores) / len(scores), len(scores)

    def log_eval(step: int) -> None:
        began = time.time()
        mean, items = evaluate()
        log.write(
            "eval", step=step, eval_reward_mean=mean, eval_items=items, eval_seconds=time.time() - began
        )

    class Timeline(TrainerCallback):
        """A line per optimizer step, and the held-out evaluation at Tandem's cadence."""

        def __init__(self) -> None:
            self.last_eval: int | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            log_eval(0)
            self.last_eval = 0

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            log.write("step", step=state.global_step)
            if state.global_step % spec["eval_every"] == 0:
                log_eval(state.global_step)
                self.last_eval = state.global_step

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.last_eval != state.global_step:  # Tandem evaluates the final weights too
                log_eval(state.global_step)
            log.write("end", steps=state.global_step)

    trainer = RLOOTrainer(
        model=model,
        reward_funcs=reward,
        args=RLOOConfig(**spec["trl"]),
        train_dataset=Dataset.from_list(train),
        processing_class=tokenizer,
        callbacks=[Timeline()],
    )
    log.write("ready")
    trainer.train()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} SPEC.json")
    main(Path(sys.argv[1]))
