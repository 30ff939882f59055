"""LoRA vs full weight sync (issue 20): bytes and seconds per sync, learner peak memory, and the choice
between merging the adapter into the engine's weights and serving it as a vLLM LoRA adapter.

For random Qwen2 models of about 10 M and 100 M parameters (benchmarks/harness.py, nothing from a
hub) with a rank-8 peft adapter on every projection (A and B random, as after training):
  sync    per transport (`collective`, `filesystem`), alternating: publish the merged model (what a
          LoRA run sent before adapter-only sync, and what a full fine-tuning run sends) vs publish the
          adapter alone (A, B, scaling per weight), each time fetched and loaded into one running
          vLLM engine (`GenerationEngine.load_weights`: verified, the adapter merged into the base in
          the worker). Seconds include building the state dict on the learner's side.
  memory  the learner's peak resident memory (ru_maxrss of a child process) over two DeepSpeed steps
          (the learner's own `create_engine`, AdamW) on 4 x 128 tokens, full fine-tuning vs LoRA.
  serving (one size) the alternative to merging: a vLLM engine with `enable_lora` loading each version
          as a new adapter (`LoRARequest`, a new id per version, peft folder written per version) vs
          the merging engine: seconds from publish to the first tokens of the new version, and
          generation tokens/s with the adapter active vs merged weights.
A benchmark, not a test: nothing fails on a figure.

    .venv/bin/python benchmarks/lora_sync_bench.py [--sizes 10M 100M] [--repeats 3]
        [--transports collective filesystem] [--serving-size 10M] [--skip memory serving]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

import torch
from weight_sync_bench import SIZES, open_transport

from core.config.model import LoraConfig
from learner.lora import adapter_state_dict, apply_lora, merged_state_dict

from harness import alternate, random_qwen2

LORA = LoraConfig(rank=8, alpha=16.0)
PROMPTS, SAMPLES, NEW_TOKENS = 16, 4, 32


def lora_policy(directory: Path, seed: int = 1) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    policy = apply_lora(AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval(), LORA)
    randomise_adapter(policy, seed)
    return policy


def randomise_adapter(policy: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if ".lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)


def measure_sync(directory: Path, repeats: int, transports: list[str], scratch: Path) -> dict[str, Any]:
    """Seconds (publish incl. the state dict, fetch, load) and bytes per sync, full vs LoRA."""
    from actors.engine import GenerationEngine

    policy = lora_policy(directory)
    engine = GenerationEngine(directory, dtype="float32", max_model_len=128)
    opened = {kind: open_transport(kind, scratch / kind) for kind in transports}
    rows: dict[str, list[dict[str, float]]] = {}
    version = 0

    def sync(kind: str, mode: str) -> float:
        nonlocal version
        version += 1
        publisher, subscriber = opened[kind]
        started = time.perf_counter()
        state = merged_state_dict(policy) if mode == "full" else adapter_state_dict(policy)
        manifest = publisher.publish(state, version)
        published_at = time.perf_counter()
        offer = subscriber.latest()
        fetched_at = time.perf_counter()
        assert offer is not None and offer.version == version
        engine.load_weights(offer)
        loaded_at = time.perf_counter()
        row = {"publish": published_at - started, "fetch": fetched_at - published_at,
               "load": loaded_at - fetched_at, "bytes": manifest.num_bytes}  # fmt: skip
        if kind == "collective":
            row |= {f"load.{key}": value for key, value in engine.load_seconds.items()}
        rows.setdefault(f"{kind} {mode}", []).append(row)
        return loaded_at - started

    sides = {
        f"{kind} {mode}": (lambda k=kind, m=mode: sync(k, m))
        for kind in transports
        for mode in ("full", "lora")
    }
    seconds = alternate(sides, repeats)
    engine.close()
    result = {}
    for label, values in seconds.items():
        kept = rows[label][1:]  # the warm-up run dropped
        result[label] = {
            "seconds": statistics.median(values),
            "bytes": kept[0]["bytes"],
            "phases": {
                key: round(statistics.median(r[key] for r in kept), 4) for key in kept[0] if key != "bytes"
            },
        }
    return result


def measure_memory(directory: Path) -> dict[str, Any]:
    """Peak RSS of two learner steps, full vs LoRA, each in its own process (ru_maxrss never falls)."""
    found = {}
    for mode in ("full", "lora"):
        command = [sys.executable, __file__, "--memory-child", str(directory), mode]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        found[mode] = json.loads(output.strip().splitlines()[-1])
    return found


def memory_child(directory: Path, mode: str) -> None:
    from transformers import AutoModelForCausalLM

    from core.config import load_config
    from core.logprobs import completion_logprobs
    from learner import engine as ds

    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    if mode == "lora":
        model = apply_lora(model, LORA)
    loaded_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    config = load_config(overrides=["learner.lr=1e-4"])
    engine = ds.create_engine(model, config.learner)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 250, (4, 128), generator=generator)
    mask = torch.zeros_like(ids)
    mask[:, 64:] = 1
    for _ in range(2):
        ds.begin_step(engine, 1, 1e-4)
        loss = -completion_logprobs(engine, ids, torch.ones_like(ids), mask).mean()
        ds.backward(engine, loss)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(
        json.dumps(
            {"peak_mib": peak_kib / 1024, "after_model_mib": loaded_kib / 1024, "trainable": trainable}
        )
    )


def measure_serving(directory: Path, scratch: Path, versions: int = 3) -> dict[str, Any]:
    """Merging vs vLLM's LoRA serving: publish-to-first-token seconds per version and tokens/s."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    from actors.engine import GenerationEngine
    from core.weight_sync.filesystem import FilesystemPublisher, FilesystemSubscriber

    generator = torch.Generator().manual_seed(0)
    prompts = [TokensPrompt(prompt_token_ids=torch.randint(0, 250, (16,), generator=generator).tolist())
               for _ in range(PROMPTS)]  # fmt: skip
    params = SamplingParams(n=SAMPLES, max_tokens=NEW_TOKENS, ignore_eos=True, seed=0, temperature=1.0)
    tokens = PROMPTS * SAMPLES * NEW_TOKENS
    policy = lora_policy(directory)
    result: dict[str, Any] = {}

    engine = GenerationEngine(directory, dtype="float32", max_model_len=128)
    publisher, subscriber = FilesystemPublisher(scratch / "w"), FilesystemSubscriber(scratch / "w")
    swaps, rates = [], []
    for version in range(1, versions + 1):
        randomise_adapter(policy, version)
        started = time.perf_counter()
        publisher.publish(adapter_state_dict(policy), version)
        engine.load_weights(subscriber.latest())  # type: ignore[arg-type]
        engine.llm.generate(prompts[:1], SamplingParams(max_tokens=1), use_tqdm=False)
        swaps.append(time.perf_counter() - started)
        started = time.perf_counter()
        engine.llm.generate(prompts, params, use_tqdm=False)
        rates.append(tokens / (time.perf_counter() - started))
    engine.close()
    result["merge"] = {"publish_to_first_token_s": swaps, "tokens_per_s": rates}

    lora: dict[str, Any] = {"publish_to_first_token_s": [], "tokens_per_s": []}
    result["vllm_lora"] = lora
    try:
        llm = LLM(model=str(directory), dtype="float32", max_model_len=128, enforce_eager=True,
                  enable_lora=True, max_lora_rank=LORA.rank, max_loras=1)  # fmt: skip
        for version in range(1, versions + 1):
            randomise_adapter(policy, version)
            started = time.perf_counter()
            folder = scratch / f"adapter-v{version}"
            policy.save_pretrained(folder)  # what the learner would publish for vLLM to load
            request = LoRARequest(f"policy-v{version}", version, str(folder))
            llm.generate(prompts[:1], SamplingParams(max_tokens=1), lora_request=request, use_tqdm=False)
            lora["publish_to_first_token_s"].append(time.perf_counter() - started)
            started = time.perf_counter()
            llm.generate(prompts, params, lora_request=request, use_tqdm=False)
            lora["tokens_per_s"].append(tokens / (time.perf_counter() - started))
            if version > 1:
                llm.llm_engine.remove_lora(version - 1)  # no request uses the old one any more
        llm.llm_engine.engine_core.shutdown()
    except Exception as error:  # the measurement then is the error itself
        lora["error"] = f"{type(error).__name__}: {error}"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["10M", "100M"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--transports", nargs="+", choices=("collective", "filesystem"), default=["collective", "filesystem"]
    )
    parser.add_argument("--serving-size", choices=list(SIZES), default="10M")
    parser.add_argument("--skip", nargs="*", choices=("sync", "memory", "serving"), default=[])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--memory-child", nargs=2, metavar=("MODEL_DIR", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(Path(args.memory_child[0]), args.memory_child[1])
        return
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tandem-lora-sync-bench-") as scratch:
        for size in args.sizes:
            directory, parameters = random_qwen2(*SIZES[size])
            found: dict[str, Any] = {"parameters": parameters}
            if "sync" not in args.skip:
                found["sync"] = measure_sync(directory, args.repeats, args.transports, Path(scratch) / size)
            if "memory" not in args.skip:
                found["learner_memory"] = measure_memory(directory)
            if "serving" not in args.skip and size == args.serving_size:
                found["serving"] = measure_serving(directory, Path(scratch) / f"{size}-serving")
            figures[size] = found
            print(json.dumps({size: found}, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
