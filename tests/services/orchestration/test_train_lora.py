"""`tandem train` with a LoRA adapter (`--set model.lora.rank=8`), end to end on the demo model: the
learner trains the adapter only, its reference is the base with the adapter off, each weight sync
sends the adapter alone (the actors merge it into their base) and they evaluate on the final version;
the checkpoint exports the merged model (`hf/`) and the adapter (`hf-adapter/`), and a resume
continues from it. vLLM serving the merged export generates what transformers' base model + adapter
(peft) ranks first.
"""

from pathlib import Path

import pytest
import ray
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from core.config import load_config
from core.tinymodels.tasks import read_jsonl
from learner.lora import ADAPTER_DIR
from services.orchestration.run_files import read_jsonl as read_run_jsonl
from tests.generation_support import greedy_disagreements

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]


def lora_demo(run_dir: Path, model: Path, max_steps: int) -> list[str]:
    return [
        f"run.run_dir={run_dir}",
        "run.max_minutes=8",
        f"model.path={model}",
        "model.lora.rank=8",
        f"actors.train_prompts={model / 'prompts' / 'train.jsonl'}",
        f"actors.eval_prompts={model / 'prompts' / 'eval.jsonl'}",
        "actors.prompts_per_batch=8",
        f"learner.max_steps={max_steps}",
        "learner.batch_groups=4",
        "learner.lr=1e-3",
        "learner.eval_every=2",
        "learner.checkpoint_every=2",
        "buffer.high_water=16",
    ]


def test_lora_run_trains_the_adapter_exports_both_forms_and_resumes(
    tiny_arith_model: Path, tmp_path: Path
) -> None:
    from peft import PeftModel

    from actors.engine import GenerationEngine
    from actors.sampling import PromptRequest, SamplingSettings
    from services.orchestration.driver import train

    run_dir = tmp_path / "run"
    try:
        result = train(
            load_config(ROOT / "configs" / "demo.yaml", lora_demo(run_dir, tiny_arith_model, 4)),
            progress=False,
        )
    finally:
        ray.shutdown()
    assert result.steps == 4 and result.policy_version == 4
    evals = read_run_jsonl(run_dir / "eval.jsonl")
    assert [row["step"] for row in evals] == [0, 2, 4] and evals[-1]["policy_version"] == 4
    # Adapter-only sync: each publish is a small fraction of the model (rank 8 on a 128-wide model).
    model_bytes = (tiny_arith_model / "model.safetensors").stat().st_size
    sent = [row["publish_bytes"] for row in read_run_jsonl(run_dir / "metrics.jsonl")]
    print(f"bytes per weight sync: {sent} (the model file: {model_bytes})")
    assert sent and all(0 < size < model_bytes / 4 for size in sent), sent

    checkpoint = run_dir / "checkpoints" / "step-00000004"
    export, adapter_dir = checkpoint / "hf", checkpoint / ADAPTER_DIR
    assert (export / "config.json").is_file() and (adapter_dir / "adapter_config.json").is_file()
    initial = load_file(tiny_arith_model / "model.safetensors")
    merged = load_file(export / "model.safetensors")
    assert set(merged) == set(initial), "the merged export has the base model's tensor names"
    changed = {name for name in merged if not torch.equal(merged[name], initial[name])}
    # Only the adapted projections moved; embeddings and norms are the base model's, bit for bit.
    assert changed and all(name.rsplit(".", 2)[-2].endswith("_proj") for name in changed), changed

    prompts = [p.prompt for p in read_jsonl(tiny_arith_model / "prompts" / "eval.jsonl")[:24]]
    engine = GenerationEngine(export, seed=0)
    try:
        requests = [PromptRequest(str(i), prompt) for i, prompt in enumerate(prompts)]
        groups = engine.generate(requests, n=1, sampling=SamplingSettings(temperature=0.0, max_tokens=6))
    finally:
        engine.close()
    sequences = [(list(g[0].prompt_token_ids), list(g[0].completion_token_ids)) for g in groups]
    base = AutoModelForCausalLM.from_pretrained(tiny_arith_model, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, adapter_dir).eval()
    disagreements = greedy_disagreements(adapted, sequences)
    assert not disagreements, "vLLM on the merged export and base+adapter disagree: " + "; ".join(
        disagreements
    )

    try:
        resumed = train(
            load_config(ROOT / "configs" / "demo.yaml", lora_demo(run_dir, tiny_arith_model, 6)),
            resume=True,
            progress=False,
        )
    finally:
        ray.shutdown()
    assert resumed.steps == 6 and resumed.policy_version == 6
    assert [row["step"] for row in read_run_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
