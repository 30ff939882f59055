"""Learner throughput: Tandem's DeepSpeed train_step vs a bare PyTorch AdamW loop, same model and batch.

Both compute the same CoPG loss from the same per-sequence log-probs, back-propagate and step AdamW;
the bare loop has no DeepSpeed, no reference cache and no micro-batch planning. They run alternately
in one process; prints median training tokens/s, spread and the ratio (target >= 0.9 on CPU).

    DS_ACCELERATOR=cpu .venv/bin/python benchmarks/learner_bench.py [--model models/tiny-arith] [--steps 10]

The scaled mode (`--model-size`, issue 21) trains a random Qwen2 with Qwen2.5-0.5B or 1.5B shapes
(built from a config, nothing downloaded) in bf16 on a GPU, 64 groups x 4 samples x 512 tokens by
default, and reports tokens/s against a bare PyTorch loop (float32 weights under bf16 autocast, fused
AdamW), MFU against the GPU's dense bf16 peak, peak memory, a forward/backward/optimizer breakdown and
a CUDA-vs-CPU parity check of loss and gradient (`--parity`). `--device cpu --model-size tiny` runs
the same code on a CPU (a smoke run; no MFU or memory there):

    DS_ACCELERATOR=cuda python benchmarks/learner_bench.py --device cuda --model-size 1.5b --parity \
        --json out.json --markdown out.md
"""

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# DeepSpeed picks its accelerator when imported: `cuda` when `--device cuda` is asked for, else `cpu`.
os.environ.setdefault(
    "DS_ACCELERATOR",
    "cuda" if "--device cuda" in " ".join(sys.argv).replace("--device=", "--device ") else "cpu",
)

import torch
from transformers import AutoModelForCausalLM

from core.config import load_config
from core.logprobs import completion_logprobs
from core.reference_model import ReferenceModel
from core.schemas import Sample, ScoredGroup, build_train_batch
from learner import engine as ds
from learner.algorithms import copg_loss
from learner.step import row_keys, train_step

from harness import BenchResult, Comparison, random_qwen2


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
    directory, parameters = random_qwen2(hidden_size, layers)
    print(f"random Qwen2: {parameters / 1e6:.1f} M parameters")
    return directory


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/tiny-arith"))
    parser.add_argument("--groups", type=int, help="default 16; 64 with --model-size")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, help="default 16; 64 with --model-size")
    parser.add_argument("--completion-tokens", type=int, help="default 32; 448 with --model-size")
    parser.add_argument("--steps", type=int, help="default 10; 3 with --model-size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--hidden-size", type=int, help="benchmark a random Qwen2 of this width instead of --model"
    )
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument(
        "--micro-batch-tokens", type=int,
        help="Tandem's token budget; default one micro-batch, like the bare loop (8192 with --model-size)",
    )  # fmt: skip
    scaled_mode = parser.add_argument_group("scaled mode (issue 21)")
    scaled_mode.add_argument(
        "--model-size", choices=sorted(MODEL_SHAPES), help="a Qwen2.5-shaped random model"
    )
    scaled_mode.add_argument("--device", choices=["cpu", "cuda"], help="default cuda when available")
    scaled_mode.add_argument("--precision", choices=["fp32", "bf16"], help="default bf16 on cuda, else fp32")
    scaled_mode.add_argument("--attention", choices=["eager", "sdpa"], default="sdpa")
    scaled_mode.add_argument("--activation-checkpointing", action="store_true")
    scaled_mode.add_argument("--warmup", type=int, default=1, help="untimed steps per side")
    scaled_mode.add_argument("--parity", action="store_true", help="also check loss and gradient vs the CPU")
    scaled_mode.add_argument("--json", type=Path, help="write the figures here")
    scaled_mode.add_argument("--markdown", type=Path, help="write the figures here as a markdown section")
    args = parser.parse_args(argv)
    # `--device` alone asks for the scaled mode at its sizes: both Qwen2.5 shapes on a GPU, the tiny
    # one on a CPU. The plain mode (the suite's) has no --device: it uses what DeepSpeed was given.
    if args.model_size is None and args.device is not None:
        args.model_sizes = ["0.5b", "1.5b"] if args.device == "cuda" else ["tiny"]
        args.model_size = args.model_sizes[0]
    else:
        args.model_sizes = [args.model_size] if args.model_size else []
    scaled = args.model_size is not None
    defaults = {"groups": (16, 64), "prompt_tokens": (16, 64), "completion_tokens": (32, 448),
                "steps": (10, 3), "micro_batch_tokens": (10**9, 8192)}  # fmt: skip
    for name, (plain, scaled_default) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, scaled_default if scaled else plain)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() and os.environ["DS_ACCELERATOR"] != "cpu" else "cpu"
    if args.precision is None:
        args.precision = "bf16" if args.device == "cuda" else "fp32"
    return args


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Training tokens/s of each side per repetition, alternating, plus what was measured."""
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
        args.groups, args.samples, args.prompt_tokens, args.completion_tokens, policy.config.vocab_size - 2
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
    return {
        "ours": ours,
        "raw": raw,
        "device": str(device),
        "tokens": batch.num_tokens,
        "groups": len(groups),
    }


def run(quick: bool) -> BenchResult:
    """The suite's entry: the demo model and batch, more short repetitions than the CLI's default so the
    median holds on a shared machine."""
    args = parse_args(["--steps", "2", "--repeats", "2"] if quick else ["--steps", "2", "--repeats", "7"])
    measured = measure(args)
    return BenchResult(
        name="learner",
        title="DeepSpeed train_step vs a bare PyTorch AdamW loop",
        method=(
            f"{args.model}, a batch of {measured['groups']} groups x {args.samples} samples "
            f"({measured['tokens']} tokens) on {measured['device']}, {args.steps} steps per repetition. Both "
            "sides compute the same CoPG loss from per-sequence log-probs, back-propagate, clip and step "
            "AdamW; Tandem's `train_step` adds DeepSpeed, the cached reference and micro-batch planning."
        ),
        comparisons=[
            Comparison(
                name="training tokens/s",
                unit="tokens/s",
                ours_label="Tandem train_step (DeepSpeed)",
                baseline_label="bare PyTorch AdamW loop",
                ours=measured["ours"],
                baseline=measured["raw"],
                target=0.9,
                miss_note=(
                    "A step of the demo model takes tenths of a second, so DeepSpeed's fixed per-step work "
                    "(its engine's backward and step bookkeeping around the same AdamW) is a larger share "
                    "than on a real model, and on two shared cores the repetitions spread widely. A larger "
                    "model (`--hidden-size 512`) on an idle machine would tell a real gap from noise; if "
                    "one remains, a profile of `train_step` shows whether it is ours or DeepSpeed's."
                ),
            )
        ],
    )


def main() -> None:
    args = parse_args()
    if args.model_size is not None:
        if args.device == "cuda" and os.environ["DS_ACCELERATOR"] != "cuda":
            raise SystemExit("--device cuda needs DS_ACCELERATOR=cuda (or unset)")
        if args.device == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda: PyTorch sees no CUDA device here")
        results, texts = [], []
        for index, size in enumerate(args.model_sizes):
            # The parity check (a small model) once, with the first size.
            one = argparse.Namespace(
                **{**vars(args), "model_size": size, "parity": args.parity and index == 0}
            )
            results.append(scaled(one))
            texts.append(scaled_markdown(results[-1]))
            print(texts[-1], flush=True)
        if args.markdown:
            args.markdown.write_text("\n".join(texts))
        if args.json:
            args.json.write_text(
                json.dumps(results[0] if len(results) == 1 else results, indent=2, default=str)
            )
        failed = [r["parity"] for r in results if r.get("parity") and not r["parity"]["passed"]]
        if failed:
            raise SystemExit("parity check failed: " + json.dumps(failed[0]))
        return
    measured = measure(args)
    ours, raw = measured["ours"], measured["raw"]
    device, batch_tokens, groups = measured["device"], measured["tokens"], measured["groups"]
    ratios = [o / r for o, r in zip(ours, raw, strict=True)]
    print(f"device {device}; batch {groups} groups x {args.samples} samples, {batch_tokens} tokens")
    for label, values in (("Tandem train_step (DeepSpeed)", ours), ("bare PyTorch AdamW loop", raw)):
        spread = f"min {min(values):.0f}, max {max(values):.0f}"
        print(f"{label:30s} median {statistics.median(values):9.0f} tokens/s ({spread})")
    spread = f"min {min(ratios):.2f}, max {max(ratios):.2f}"
    print(f"ratio: median {statistics.median(ratios):.2f} ({spread}); target >= 0.9")


# --- The scaled mode (`--model-size`): a Qwen2.5-shaped random model, bf16, MFU, memory, breakdown ---

# Qwen2.5-0.5B / 1.5B shapes (their config.json), random weights built from the config: nothing is
# downloaded. `tiny` is for CPU smoke runs of the same code path.
MODEL_SHAPES: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512),
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, vocab_size=151936),
}  # fmt: skip

# Dense bf16 tensor-core peaks (no sparsity), by a substring of torch.cuda.get_device_name(); the
# first match wins, so the more specific names come first. H200 has H100 SXM's compute.
BF16_PEAK_FLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
]


def bf16_peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU named `device_name`, or None when it is not in the table."""
    return next((peak for key, peak in BF16_PEAK_FLOPS if key in device_name), None)


def training_flops_per_token(parameters: int, layers: int, hidden: int, sequence: int) -> float:
    """Model FLOPs of one trained token: 6 per parameter (forward 2, backward 4) plus causal attention's
    score and value products, 12 * layers * hidden * sequence (PaLM's appendix B; not halved for the
    causal mask, as usual for MFU). Recomputation (activation checkpointing) is not counted."""
    return 6 * parameters + 12 * layers * hidden * sequence


def qwen2_model(size: str, device: torch.device, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised Qwen2 of `size` in float32, built on `device` (fast on a GPU)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    shape = MODEL_SHAPES[size]
    config = Qwen2Config(
        **shape, pad_token_id=shape["vocab_size"] - 1, eos_token_id=shape["vocab_size"] - 2,
        tie_word_embeddings=True, max_position_embeddings=4096,
    )  # fmt: skip
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    return model.float().eval()  # eval, as from_pretrained returns it: no dropout


class PrecomputedReference:
    """The reference log-probs of the batch's rows, computed once (Tandem's reference cache serves
    them so after a group's first step; the bare loop has no reference model either)."""

    def __init__(self, values: torch.Tensor):
        self.values = values.double().cpu()

    def logprobs(self, batch: Any, keys: list, rows: torch.Tensor | None = None) -> torch.Tensor:
        return self.values if rows is None else self.values[rows]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class PhaseTimer:
    """Seconds per phase (forward, backward, optimizer), the device synchronised around each; used only
    in a separate instrumented step, since the synchronisation itself costs time."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}

    def wrap(self, phase: str, function: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            synchronize(self.device)
            started = time.perf_counter()
            result = function(*args, **kwargs)
            synchronize(self.device)
            self.seconds[phase] += time.perf_counter() - started
            return result

        return timed


def scaled_batch(args: argparse.Namespace, vocab: int) -> tuple[list[ScoredGroup], Any]:
    groups = synthetic_batch(args.groups, args.samples, args.prompt_tokens, args.completion_tokens, vocab - 2)
    return groups, build_train_batch(groups, pad_token_id=vocab - 1)


def tandem_side(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Tandem's train_step (DeepSpeed, `learner.precision`, single-pass micro-batches): tokens/s per
    step, peak memory, and a step-time breakdown from one more, instrumented, step."""
    import learner.step as step_module

    model = qwen2_model(args.model_size, device)
    overrides = [
        f"learner.precision={args.precision}", f"learner.micro_batch_tokens={args.micro_batch_tokens}",
        f"learner.attention={args.attention}", "learner.lr=1e-5",
        f"learner.activation_checkpointing={str(args.activation_checkpointing).lower()}",
    ]  # fmt: skip
    config = load_config(None, overrides, environ={})
    engine = ds.create_engine(model, config.learner)
    _, batch = scaled_batch(args, model.config.vocab_size)
    # The reference pass is cut as the step's own: whole groups, or rows where a group exceeds the budget.
    plans = step_module.plan_group_micro_batches(
        batch, args.micro_batch_tokens
    ) or step_module.plan_micro_batches(batch, args.micro_batch_tokens)
    values = []
    with torch.no_grad():  # the reference is the initial policy
        for rows in plans:
            inputs = [
                getattr(batch, k)[rows].to(device) for k in ("input_ids", "attention_mask", "completion_mask")
            ]
            values.append(completion_logprobs(engine, *inputs))
    reference = PrecomputedReference(torch.cat(values))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def one_step() -> dict[str, Any]:
        return train_step(engine, reference, batch, config.algorithm, args.micro_batch_tokens, 1e-5)

    for _ in range(args.warmup):
        one_step()
    rates, first = [], None
    for _ in range(args.steps):
        synchronize(device)
        started = time.perf_counter()
        metrics = one_step()
        synchronize(device)
        first = first or metrics
        rates.append(batch.num_tokens / (time.perf_counter() - started))
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    timer = PhaseTimer(device)
    forward, backward, stepper = step_module.completion_logprobs_at, engine.backward, engine.step
    step_module.completion_logprobs_at = timer.wrap("forward", forward)  # type: ignore[assignment]
    engine.backward, engine.step = timer.wrap("backward", backward), timer.wrap("optimizer", stepper)
    try:
        synchronize(device)
        started = time.perf_counter()
        one_step()
        synchronize(device)
        total = time.perf_counter() - started
    finally:
        step_module.completion_logprobs_at = forward  # type: ignore[assignment]
        engine.backward, engine.step = backward, stepper
    assert first is not None
    return {
        "tokens_per_s": rates, "peak_memory_bytes": peak, "breakdown_s": timer.seconds | {"total": total},
        "micro_batches": first["micro_batches"], "single_pass": first["single_pass"],
        "parameters": sum(p.numel() for p in engine.module.parameters()), "tokens": batch.num_tokens,
        "shape": MODEL_SHAPES[args.model_size], "sequence": args.prompt_tokens + args.completion_tokens,
        "engine": engine,
    }  # fmt: skip


def bare_side(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The bare PyTorch loop on the same model, batch and micro-batches: float32 weights under
    torch.autocast(bfloat16) (PyTorch's usual mixed precision: float32 master weights and AdamW state,
    bf16 matmuls), the same CoPG loss from the same per-sequence log-probs, each micro-batch weighted
    by its share of the batch, gradient clipping, AdamW (fused on CUDA). No DeepSpeed, no reference
    lookup, no checks."""
    from core.config.learner import LearnerConfig
    from learner.algorithms import batch_share
    from learner.step import plan_group_micro_batches

    # The same model set-up as Tandem's (attention kernel, checkpointing); no DeepSpeed from here on.
    options = LearnerConfig(attention=args.attention, activation_checkpointing=args.activation_checkpointing)
    model = ds.prepare_model(qwen2_model(args.model_size, device), options)
    groups, batch = scaled_batch(args, model.config.vocab_size)
    on_device = {
        name: getattr(batch, name).to(device) for name in ("input_ids", "attention_mask", "completion_mask")
    }
    rewards, group_index = batch.rewards.to(device), batch.group_index.to(device)
    # Where a group exceeds the budget the bare loop takes the whole batch at once (exact, more memory).
    plans = plan_group_micro_batches(batch, args.micro_batch_tokens) or [torch.arange(len(batch.rewards))]
    bf16 = args.precision == "bf16"
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        ref = torch.cat([
            completion_logprobs(model, *(on_device[k][rows] for k in on_device)) for rows in plans
        ]).double()  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    timer = PhaseTimer(device)

    def one_step(timed: bool = False) -> None:
        wrap = timer.wrap if timed else (lambda phase, function: function)
        for rows in plans:

            def forward(rows: torch.Tensor = rows) -> torch.Tensor:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    logp = completion_logprobs(model, *(on_device[k][rows] for k in on_device)).double()
                share = batch_share("groups", group_index[rows], len(groups), len(batch.rewards))
                return share * copg_loss(logp, ref[rows], rewards[rows], group_index[rows], 0.05).loss

            wrap("backward", torch.Tensor.backward)(wrap("forward", forward)())
        wrap("optimizer", lambda: (
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0), optimizer.step(),
            optimizer.zero_grad(set_to_none=True),
        ))()  # fmt: skip

    for _ in range(args.warmup):
        one_step()
    rates = []
    for _ in range(args.steps):
        synchronize(device)
        started = time.perf_counter()
        one_step()
        synchronize(device)
        rates.append(batch.num_tokens / (time.perf_counter() - started))
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    synchronize(device)
    started = time.perf_counter()
    one_step(timed=True)
    synchronize(device)
    breakdown = timer.seconds | {"total": time.perf_counter() - started}
    return {"tokens_per_s": rates, "peak_memory_bytes": peak, "breakdown_s": breakdown}


def loss_and_gradient(model: torch.nn.Module, batch: Any, ref: torch.Tensor, device: torch.device,
                      bf16: bool) -> tuple[float, torch.Tensor]:  # fmt: skip
    """The learner's CoPG loss of the whole batch and its gradient (flattened, float32, on the CPU)."""
    model.zero_grad(set_to_none=True)
    inputs = [getattr(batch, k).to(device) for k in ("input_ids", "attention_mask", "completion_mask")]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        logp = completion_logprobs(model, *inputs).double()
    loss = copg_loss(logp, ref.to(device), batch.rewards.to(device), batch.group_index.to(device), 0.05).loss
    loss.backward()
    gradient = torch.cat([p.grad.detach().float().flatten().cpu() for p in model.parameters()])
    return float(loss.detach()), gradient


def parity(device: torch.device, size: str = "tiny") -> dict[str, Any]:
    """Loss and gradient of the learner's math (log-probs in float32, CoPG, backward) on `device` in
    float32 and under bf16 autocast, against the CPU in float32, on a small model and batch; and one
    Tandem train_step (DeepSpeed, `learner.precision=bf16`) on `device`, whose loss and gradient norm
    are compared with the CPU's. Tolerances: 1e-4 relative in float32, bf16's few parts in 100."""
    args = parse_args(["--model-size", size, "--groups", "4", "--completion-tokens", "24",
                       "--prompt-tokens", "8"])  # fmt: skip
    cpu = torch.device("cpu")
    reference_model = qwen2_model(size, cpu)
    _, batch = scaled_batch(args, reference_model.config.vocab_size)
    with torch.no_grad():
        ref = completion_logprobs(
            reference_model, batch.input_ids, batch.attention_mask, batch.completion_mask
        )
    cpu_loss, cpu_grad = loss_and_gradient(reference_model, batch, ref, cpu, bf16=False)
    found: dict[str, Any] = {"cpu_loss": cpu_loss, "cpu_grad_norm": float(cpu_grad.norm())}
    for label, bf16 in (("fp32", False), ("bf16", True)):
        loss, grad = loss_and_gradient(qwen2_model(size, cpu).to(device), batch, ref, device, bf16)
        found[label] = {
            "loss_rel_diff": abs(loss - cpu_loss) / max(abs(cpu_loss), 1e-12),
            "grad_rel_diff": float((grad - cpu_grad).norm() / cpu_grad.norm()),
            "grad_cosine": float(torch.nn.functional.cosine_similarity(grad, cpu_grad, dim=0)),
        }
    precision = "bf16" if device.type == "cuda" else "fp32"
    config = load_config(None, [f"learner.precision={precision}", "learner.grad_clip=null"], environ={})
    engine = ds.create_engine(qwen2_model(size, cpu).to(device), config.learner)
    metrics = train_step(engine, PrecomputedReference(ref), batch, config.algorithm, 10**6, 1e-5)
    found["train_step"] = {
        "precision": precision,
        "loss_rel_diff": abs(metrics["loss"] - cpu_loss) / max(abs(cpu_loss), 1e-12),
        "grad_norm_rel_diff": abs(metrics["grad_norm"] - found["cpu_grad_norm"]) / found["cpu_grad_norm"],
    }
    limits = {"fp32": 1e-4, "bf16": 5e-2}
    found["passed"] = bool(
        found["fp32"]["loss_rel_diff"] < limits["fp32"] and found["fp32"]["grad_rel_diff"] < limits["fp32"]
        and found["bf16"]["loss_rel_diff"] < limits["bf16"] and found["bf16"]["grad_cosine"] > 0.99
        and found["train_step"]["loss_rel_diff"] < limits[precision]
        and found["train_step"]["grad_norm_rel_diff"] < limits[precision]
    )  # fmt: skip
    found["limits"] = limits
    return found


def scaled(args: argparse.Namespace) -> dict[str, Any]:
    """The scaled mode: Tandem's side, then the bare loop (one after the other, not alternated: both
    models and optimizers at 1.5B would not fit one GPU together), then MFU and parity."""
    device = torch.device(args.device)
    ours = tandem_side(args, device)
    del ours["engine"]  # free the engine before the bare loop's model and optimizer
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    raw = bare_side(args, device)
    shape, sequence = ours["shape"], ours["sequence"]
    flops = training_flops_per_token(
        ours["parameters"], shape["num_hidden_layers"], shape["hidden_size"], sequence
    )
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    peak = bf16_peak_flops(name) if device.type == "cuda" else None
    result: dict[str, Any] = {
        "model_size": args.model_size, "device": name, "precision": args.precision,
        "attention": args.attention, "activation_checkpointing": args.activation_checkpointing,
        "groups": args.groups, "samples": args.samples, "sequence": sequence,
        "micro_batch_tokens": args.micro_batch_tokens, "ours": ours, "raw": raw,
        "flops_per_token": flops, "peak_flops": peak,
    }  # fmt: skip
    for side in (ours, raw):
        median = statistics.median(side["tokens_per_s"])
        side["median_tokens_per_s"] = median
        side["mfu"] = median * flops / peak if peak else None
    result["ratio"] = ours["median_tokens_per_s"] / raw["median_tokens_per_s"]
    if args.parity:
        result["parity"] = parity(device)
    return result


def scaled_markdown(result: dict[str, Any]) -> str:
    """The scaled mode's figures as a markdown section."""
    ours, raw = result["ours"], result["raw"]

    def gib(value: int | None) -> str:
        return "n/a" if value is None else f"{value / 2**30:.1f} GiB"

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f} %"

    lines = [
        f"### Qwen2 {result['model_size']} ({ours['parameters'] / 1e6:.1f} M parameters), {result['device']}",
        "",
        f"{result['groups']} groups x {result['samples']} samples x {result['sequence']} tokens "
        f"({ours['tokens']} tokens per step), {result['precision']}, attention {result['attention']}, "
        f"activation checkpointing {result['activation_checkpointing']}, micro-batches of "
        f"{result['micro_batch_tokens']} tokens ({ours['micro_batches']:.0f} per step, "
        f"single pass: {bool(ours['single_pass'])}).",
        "",
        "| | tokens/s (median) | min-max | MFU | peak memory | forward s | backward s | optimizer s "
        "| step s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, side in (("Tandem train_step (DeepSpeed)", ours), ("bare PyTorch loop", raw)):
        b = side["breakdown_s"]
        lines.append(
            f"| {label} | {side['median_tokens_per_s']:.0f} | {min(side['tokens_per_s']):.0f}-"
            f"{max(side['tokens_per_s']):.0f} | {pct(side['mfu'])} | {gib(side['peak_memory_bytes'])} | "
            f"{b['forward']:.3f} | {b['backward']:.3f} | {b['optimizer']:.3f} | {b['total']:.3f} |"
        )
    lines += ["", f"Ratio Tandem / bare: {result['ratio']:.2f} (median tokens/s)."]
    if result.get("parity"):
        p = result["parity"]
        lines += [
            "",
            f"Parity vs CPU float32 (tiny model): {'passed' if p['passed'] else '**FAILED**'}. "
            f"fp32 loss rel. diff {p['fp32']['loss_rel_diff']:.1e}, gradient rel. diff "
            f"{p['fp32']['grad_rel_diff']:.1e}; bf16 loss rel. diff {p['bf16']['loss_rel_diff']:.1e}, "
            f"gradient cosine {p['bf16']['grad_cosine']:.4f}; train_step ({p['train_step']['precision']}) "
            f"loss rel. diff {p['train_step']['loss_rel_diff']:.1e}, gradient-norm rel. diff "
            f"{p['train_step']['grad_norm_rel_diff']:.1e}.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
