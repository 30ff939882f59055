"""A checkpoint's HF export (`hf/`) is a complete model directory: vLLM serves it directly and its greedy
completions are those of transformers loading the same directory."""

from pathlib import Path

import pytest
import torch
from learner_support import learner_config, sampled_groups
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.schemas import build_train_batch
from core.tinymodels.tasks import read_jsonl
from learner import engine as ds
from learner.checkpoint import LearnerState, save_checkpoint
from learner.reference import ReferenceModel
from learner.step import train_step
from tests.generation_support import transformers_greedy as greedy_of

pytestmark = pytest.mark.slow


def transformers_greedy(directory: Path, prompts: list[str], max_tokens: int) -> list[str]:
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    return greedy_of(model, tokenizer, prompts, max_tokens)


def test_the_hf_export_of_a_trained_checkpoint_generates_the_same_in_vllm_and_transformers(
    tiny_arith_model: Path, tmp_path: Path
) -> None:
    from actors.engine import GenerationEngine
    from actors.sampling import PromptRequest, SamplingSettings

    config = learner_config(tiny_arith_model, tmp_path / "run", "learner.lr=3e-3")
    model = AutoModelForCausalLM.from_pretrained(tiny_arith_model, dtype=torch.float32)
    initial = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    engine = ds.create_engine(model, config.learner)
    reference = ReferenceModel(tiny_arith_model)
    for seed in range(3):
        batch = build_train_batch(sampled_groups(tiny_arith_model, seed=seed, prefix=f"s{seed}"), 257)
        train_step(engine, reference, batch, config.algorithm, token_budget=100_000, lr=3e-3)
    export = save_checkpoint(
        engine, LearnerState(step=3, policy_version=3), config.run.run_dir, tiny_arith_model
    )
    export = export / "hf"
    moved = max(
        (tensor - initial[name]).abs().max().item() for name, tensor in engine.module.state_dict().items()
    )
    assert moved > 1e-3, "training changed the weights, so the export is not the initial model"

    prompts = [p.prompt for p in read_jsonl(tiny_arith_model / "prompts" / "eval.jsonl")[:40]]
    vllm = GenerationEngine(export, seed=0)
    requests = [PromptRequest(str(i), prompt) for i, prompt in enumerate(prompts)]
    groups = vllm.generate(requests, n=1, sampling=SamplingSettings(temperature=0.0, max_tokens=6))
    vllm.close()
    from_vllm = [group[0].completion_text for group in groups]
    from_transformers = transformers_greedy(export, prompts, max_tokens=6)
    before = transformers_greedy(tiny_arith_model, prompts, max_tokens=6)
    changed = sum(a != b for a, b in zip(from_transformers, before, strict=True))
    print(f"\n{len(prompts)} greedy completions agree; {changed} differ from the initial model's")
    assert from_vllm == from_transformers
