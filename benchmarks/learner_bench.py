"""Learner throughput: Tandem's DeepSpeed train_step vs a bare PyTorch AdamW loop, same model and batch.

Both compute the same CoPG loss from the same per-sequence log-probs, back-propagate and step AdamW;
the bare loop has no DeepSpeed, no reference cache and no micro-batch planning. They run alternately
in one process; prints median training tokens/s, spread and the ratio (target >= 0.9 on CPU).

    DS_ACCELERATOR=cpu .venv/bin/python benchmarks/learner_bench.py [--model models/tiny-arith] [--steps 10]
"""

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")

import torch
from transformers import AutoModelForCausalLM

from learner import engine as ds
from learner.algorithms import copg_loss
from learner.logprobs import completion_logprobs
from learner.reference import ReferenceModel
from learner.step import row_keys, train_step
from services.config import load_config
from services.schemas import Sample, ScoredGroup, build_train_batch


def synthetic_batch(
    groups: int, samples: int, prompt_tokens: int, completion_tokens: int, vocab: int
) -> list[ScoredGroup]:
    generator = torch.Generator().manual_seed(0)
    made = []
    for index in range(groups):
        prompt = torch.randint(0, vocab, (prompt_tokens,), generator=generator).tolist()
        group_samples = [
            Sample(
                f"p{index}",
                prompt,
                torch.randint(0, vocab, (completion_tokens,), generator=generator).tolist(),
                "",
                None,
                "length",
                0,
                "bench",
            )
            for _ in range(samples)
        ]
        rewards = torch.rand(samples, generator=generator).tolist()
        made.append(
            ScoredGroup(f"g{index}", "", prompt, group_samples, rewards, ["ok"] * samples, [{}] * samples)
        )
    return made


def random_model(hidden_size: int, layers: int) -> Path:
    """A randomly initialised Qwen2 of the given size (with the tiny tokenizer), saved to a temp dir."""
    import tempfile

    from transformers import Qwen2Config, Qwen2ForCausalLM

    from services.tinymodels.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    heads = hidden_size // 64
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=4 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    directory = Path(tempfile.mkdtemp(prefix="tandem-bench-model-"))
    model = Qwen2ForCausalLM(config)
    print(f"random Qwen2: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/tiny-arith"))
    parser.add_argument("--groups", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--completion-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--hidden-size", type=int, help="benchmark a random Qwen2 of this width instead of --model"
    )
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument(
        "--micro-batch-tokens", type=int, default=10**9,
        help="Tandem's token budget; the default keeps one micro-batch, like the bare loop",
    )  # fmt: skip
    args = parser.parse_args()
    if args.hidden_size:
        args.model = random_model(args.hidden_size, args.layers)
    device = torch.device(
        "cuda" if torch.cuda.is_available() and os.environ["DS_ACCELERATOR"] != "cpu" else "cpu"
    )
    config = load_config(None, [f"model.path={args.model}", "learner.lr=1e-5"], environ={})
    policy = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    bare = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).to(device)
    engine = ds.create_engine(policy, config.learner)
    reference = ReferenceModel(args.model, device=engine.device)
    groups = synthetic_batch(
        args.groups, args.samples, 16, args.completion_tokens, policy.config.vocab_size - 2
    )
    batch = build_train_batch(groups, pad_token_id=policy.config.pad_token_id)
    ref = reference.logprobs(batch, row_keys(batch)).double()
    optimizer = torch.optim.AdamW(bare.parameters(), lr=1e-5)
    ref_on, rewards_on, groups_on = ref.to(device), batch.rewards.to(device), batch.group_index.to(device)
    on_device = {
        name: getattr(batch, name).to(device) for name in ("input_ids", "attention_mask", "completion_mask")
    }

    def bare_steps() -> float:
        started = time.perf_counter()
        for _ in range(args.steps):
            logp = completion_logprobs(
                bare, on_device["input_ids"], on_device["attention_mask"], on_device["completion_mask"]
            )
            loss = copg_loss(logp.double(), ref_on, rewards_on, groups_on, config.algorithm.beta).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(bare.parameters(), 1.0)
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return args.steps * batch.num_tokens / (time.perf_counter() - started)

    def tandem_steps() -> float:
        started = time.perf_counter()
        for _ in range(args.steps):
            train_step(engine, reference, batch, config.algorithm, args.micro_batch_tokens, 1e-5)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return args.steps * batch.num_tokens / (time.perf_counter() - started)

    bare_steps(), tandem_steps()  # warm-up
    ours, raw = [], []
    for _ in range(args.repeats):
        ours.append(tandem_steps())
        raw.append(bare_steps())
    ratios = [o / r for o, r in zip(ours, raw, strict=True)]
    print(f"device {device}; batch {len(groups)} groups x {args.samples} samples, {batch.num_tokens} tokens")
    for label, values in (("Tandem train_step (DeepSpeed)", ours), ("bare PyTorch AdamW loop", raw)):
        spread = f"min {min(values):.0f}, max {max(values):.0f}"
        print(f"{label:30s} median {statistics.median(values):9.0f} tokens/s ({spread})")
    spread = f"min {min(ratios):.2f}, max {max(ratios):.2f}"
    print(f"ratio: median {statistics.median(ratios):.2f} ({spread}); target >= 0.9")


if __name__ == "__main__":
    main()
