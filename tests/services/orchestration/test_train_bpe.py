"""`tandem train` end to end with the BPE tiny model (`tandem make-model --tokenizer bpe`: byte-level
BPE, BOS, a chat template), the loop the character-level demo runs (tests/.../test_train_e2e.py):
real vLLM actor under Ray, embedded reward server over HTTP, DeepSpeed learner, ray weight sync, the
checkpoint's HF export. Its training prompts come from a `datasets` folder with the dataset's own
column names (`actors.prompt_fields`), half of them chat `messages` rendered by the model's template;
the held-out prompts from Parquet, all chat. The export then serves in vLLM with the same tokenizer
and chat template, its greedy tokens transformers' arg-max on the rendered chat ids.
"""

from pathlib import Path

import datasets
import pyarrow
import pyarrow.parquet
import pytest
import ray
import torch
from transformers import AutoModelForCausalLM

from actors.dead_letter import read_dead_letters
from core.config import load_config
from core.tinymodels.tasks import read_jsonl
from core.tokenization import has_chat_template, load_tokenizer, render_chat
from services.orchestration.run_files import read_jsonl as read_run_jsonl
from tests.generation_support import greedy_disagreements

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
FIELDS = "{prompt_id: id, prompt: question, messages: chat, reference: answer}"


def dataset_rows(prompts: Path, chat_every: int) -> list[dict]:
    """The prompts in a dataset's own columns; every `chat_every`-th one as a one-turn chat."""
    rows = []
    for index, problem in enumerate(read_jsonl(prompts)):
        chat = index % chat_every == 0
        rows.append(
            {
                "id": problem.prompt_id,
                "question": None if chat else problem.prompt,
                "chat": [{"role": "user", "content": problem.prompt}] if chat else None,
                "answer": problem.reference,
                "level": index % 3,  # a column the map does not name: ignored
            }
        )
    return rows


def test_bpe_model_trains_on_chat_and_text_prompts_from_dataset_files(
    tiny_arith_bpe_model: Path, tmp_path: Path
) -> None:
    from actors.engine import GenerationEngine
    from actors.sampling import PromptRequest, SamplingSettings
    from services.orchestration.driver import train

    train_folder = tmp_path / "train-set"
    datasets.Dataset.from_list(
        dataset_rows(tiny_arith_bpe_model / "prompts" / "train.jsonl", 2)
    ).save_to_disk(str(train_folder))
    eval_rows = dataset_rows(tiny_arith_bpe_model / "prompts" / "eval.jsonl", 1)[:32]
    eval_file = tmp_path / "eval.parquet"
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(eval_rows), eval_file)

    run_dir = tmp_path / "run"
    overrides = [
        f"run.run_dir={run_dir}",
        "run.max_minutes=8",
        f"model.path={tiny_arith_bpe_model}",
        f"actors.train_prompts={train_folder}",
        f"actors.eval_prompts={eval_file}",
        f"actors.prompt_fields={FIELDS}",
        "actors.prompts_per_batch=8",
        "learner.max_steps=4",
        "learner.batch_groups=4",
        "learner.eval_every=2",
        "learner.checkpoint_every=4",
        "buffer.high_water=16",
    ]
    config = load_config(ROOT / "configs" / "demo.yaml", overrides)
    try:
        result = train(config, progress=False)
    finally:
        ray.shutdown()
    assert result.steps == 4 and result.policy_version == 4

    metrics = read_run_jsonl(run_dir / "metrics.jsonl")
    assert [row["step"] for row in metrics] == [1, 2, 3, 4]
    assert all(0.0 <= row["reward_mean"] <= 1.0 for row in metrics)
    evals = read_run_jsonl(run_dir / "eval.jsonl")
    assert [row["step"] for row in evals] == [0, 2, 4]
    assert all(row["eval_failed"] == 0 for row in evals)
    assert evals[-1]["policy_version"] == 4  # the actor synced the learner's final weights
    # Every group was scored and trained on: none dead-lettered (a chat prompt the actor could not
    # render would be skipped, an unscorable one dead-lettered).
    assert read_dead_letters(run_dir / "dead_letter") == []

    export = run_dir / "checkpoints" / "step-00000004" / "hf"
    assert has_chat_template(export), "the export keeps the tokenizer's chat template"
    tokenizer = load_tokenizer(tiny_arith_bpe_model)
    exported_tokenizer = load_tokenizer(export)
    rendered = [render_chat(tokenizer, row["chat"], tiny_arith_bpe_model) for row in eval_rows[:16]]
    assert [render_chat(exported_tokenizer, row["chat"], export) for row in eval_rows[:16]] == rendered

    engine = GenerationEngine(export, seed=0)
    try:
        requests = [PromptRequest(str(i), prompt) for i, prompt in enumerate(rendered)]
        groups = engine.generate(requests, n=1, sampling=SamplingSettings(temperature=0.0, max_tokens=6))
    finally:
        engine.close()
    sequences = [(list(g[0].prompt_token_ids), list(g[0].completion_token_ids)) for g in groups]
    assert [ids for ids, _ in sequences] == [list(r.token_ids) for r in rendered]
    model = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32).eval()
    disagreements = greedy_disagreements(model, sequences)
    assert not disagreements, "vLLM and transformers disagree on the export: " + "; ".join(disagreements)
