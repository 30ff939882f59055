"""A checkpoint's HF export (`hf/`) is a complete model directory: vLLM serves it directly and its greedy
tokens are the arg-max of transformers loading the same directory (up to near-ties)."""

from pathlib import Path

import pytest
import torch
from learner_support import learner_config, sampled_groups
from transformers import AutoModelForCausalLM

from core.reference_model import ReferenceModel
from core.schemas import build_train_batch
from core.tinymodels.tasks import read_jsonl
from learner import engine as ds
from learner.checkpoint import LearnerState, save_checkpoint
from learner.step import train_step
from tests.generation_support import greedy_disagreements

pytestmark = pytest.mark.slow


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
    from_vllm = [(list(g[0].prompt_token_ids), list(g[0].completion_token_ids)) for g in groups]
    exported = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32).eval()
    # Every greedy token vLLM generates from the export is transformers' arg-max (up to near-ties).
    disagreements = greedy_disagreements(exported, from_vllm)
    assert not disagreements, "vLLM and transformers disagree on the export: " + "; ".join(disagreements)
