"""Helpers of the learner tests: scored groups sampled from the tiny policy itself."""

import random
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.config import TandemConfig, load_config
from core.schemas import Sample, ScoredGroup
from core.tinymodels.tasks import read_jsonl


def sampled_groups(
    model_dir: Path, prompts: int = 8, n: int = 4, seed: int = 0, version: int = 0, prefix: str = "g"
) -> list[ScoredGroup]:
    """n completions per held-out prompt, sampled by transformers, rewarded by exact match. Group ids
    are `<prefix>-<prompt id>`: the reference cache keys on them, so sets that may meet need prefixes."""
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    problems = random.Random(seed).sample(read_jsonl(model_dir / "prompts" / "eval.jsonl"), prompts)
    groups = []
    for problem in problems:
        prompt_ids = tokenizer.encode(problem.prompt)
        output = model.generate(
            torch.tensor([prompt_ids] * n), attention_mask=torch.ones(n, len(prompt_ids), dtype=torch.long),
            do_sample=True, max_new_tokens=6, top_k=None, top_p=None, pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
        samples, rewards = [], []
        for row in output[:, len(prompt_ids) :].tolist():
            completion = [t for t in row if t not in (tokenizer.eos_token_id, tokenizer.pad_token_id)] or [
                ord("0")
            ]
            text = tokenizer.decode(completion)
            samples.append(
                Sample(problem.prompt_id, prompt_ids, completion, text, None, "stop", version, "test")
            )
            rewards.append(float(text.strip() == problem.reference))
        groups.append(
            ScoredGroup(
                f"{prefix}-{problem.prompt_id}",
                problem.prompt,
                prompt_ids,
                samples,
                rewards,
                ["ok"] * n,
                [{"exact_match": r} for r in rewards],
                reference=problem.reference,
            )
        )
    return groups


def learner_config(model_dir: Path, run_dir: Path, *overrides: str) -> TandemConfig:
    return load_config(
        None,
        [
            f"model.path={model_dir}",
            f"run.run_dir={run_dir}",
            "learner.lr=1e-3",
            "learner.batch_groups=8",
            "buffer.high_water=64",
            "buffer.on_policy_fraction=1.0",
            *overrides,
        ],
        environ={},
    )
