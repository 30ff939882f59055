"""RLOO's importance weights on fresh groups from the real vLLM engine: at temperature 0.7, with the
learner holding the very weights that generated them, pi_T(y) / mu(y) must be 1. That needs both
halves: vLLM's processed log-probs (after temperature) as mu, and the learner's log-probs at the same
temperature (logits / T) as pi_T. Run on the character-level demo model with text prompts and on the
BPE model with chat prompts (rendered once by its chat template, core/tokenization.py), whose ids
then must be the very ids the learner scores."""

from pathlib import Path

import pytest
import torch
from learner_support import learner_config
from transformers import AutoModelForCausalLM

from core.logprobs import completion_logprobs
from core.reference_model import ReferenceModel
from core.schemas import ScoredGroup, build_train_batch
from core.tinymodels.tasks import read_jsonl
from core.tokenization import load_tokenizer, render_chat
from learner import engine as ds
from learner.step import train_step

pytestmark = pytest.mark.slow
TEMPERATURE = 0.7


@pytest.fixture(scope="module", params=["char-text", "bpe-text", "bpe-chat"])
def policy_model(request: pytest.FixtureRequest) -> tuple[Path, bool]:
    """The model and whether its prompts are chat messages."""
    tokenizer, kind = request.param.split("-")
    model = request.getfixturevalue("tiny_arith_bpe_model" if tokenizer == "bpe" else "tiny_arith_model")
    return model, kind == "chat"


@pytest.fixture(scope="module")
def fresh_groups(policy_model: tuple[Path, bool]) -> list[ScoredGroup]:
    """4 completions of each of 8 held-out prompts, sampled by vLLM at TEMPERATURE, version 0."""
    from actors.engine import GenerationEngine
    from actors.sampling import PromptRequest, SamplingSettings

    model, chat = policy_model
    problems = read_jsonl(model / "prompts" / "eval.jsonl")[:8]
    tokenizer = load_tokenizer(model)
    prompts = [
        render_chat(tokenizer, [{"role": "user", "content": p.prompt}], model) if chat else p.prompt
        for p in problems
    ]
    engine = GenerationEngine(model, seed=0)
    try:
        generated = engine.generate(
            [PromptRequest(p.prompt_id, prompt) for p, prompt in zip(problems, prompts, strict=True)],
            n=4,
            sampling=SamplingSettings(temperature=TEMPERATURE, max_tokens=8, seed=1),
        )
    finally:
        engine.close()
    groups = []
    for problem, prompt, samples in zip(problems, prompts, generated, strict=True):
        if chat:  # vLLM generated from the rendered ids, unchanged
            assert all(list(s.prompt_token_ids) == list(prompt.token_ids) for s in samples)
        rewards = [float(s.completion_text.strip() == problem.reference) for s in samples]
        statuses, details = ["ok"] * len(samples), [{}] * len(samples)
        name, prompt_ids = f"vllm-{problem.prompt_id}", samples[0].prompt_token_ids
        text = prompt.text if chat else problem.prompt
        groups.append(ScoredGroup(name, text, prompt_ids, samples, rewards, statuses, details))
    return groups


def test_importance_weights_of_fresh_vllm_groups_are_one_at_temperature_0_7(
    policy_model: tuple[Path, bool], fresh_groups: list[ScoredGroup], tmp_path: Path
) -> None:
    model, chat = policy_model
    groups = [g for g in fresh_groups if all(len(s.completion_token_ids) > 0 for s in g.samples)]
    config = learner_config(
        model, tmp_path, "algorithm.name=rloo", "algorithm.importance_sampling=truncated",
        "buffer.offline_fraction=0", f"actors.temperature={TEMPERATURE}",
    )  # fmt: skip
    policy = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    pad = int(policy.config.pad_token_id or 0)
    batch = build_train_batch(groups, pad_token_id=pad)
    with torch.no_grad():  # the untempered log pi, which the ratio used before
        untempered = completion_logprobs(policy, batch.input_ids, batch.attention_mask, batch.completion_mask)
    engine = ds.create_engine(policy, config.learner)

    metrics = train_step(
        engine, ReferenceModel(model), batch, config.algorithm, 100_000, 1e-3,
        temperature=config.actors.temperature,
    )  # fmt: skip

    low, high = metrics["is_weight_min"], metrics["is_weight_max"]
    print(f"\nimportance weights of fresh groups at T={TEMPERATURE}: min {low:.6f}, max {high:.6f}")
    assert metrics["is_weight_min"] == pytest.approx(1.0, abs=1e-4)
    assert metrics["is_weight_max"] == pytest.approx(1.0, abs=1e-4)
    # The check has teeth: log pi against these behaviour log-probs is nowhere near a ratio of 1. Not
    # for chat prompts: the tiny models were warm-started on text prompts only, and answer a chat
    # turn (a format they never saw) near-deterministically, where the temperature barely matters.
    stale_ratio = (untempered.double() - batch.behaviour_logprobs.double()).abs().max()
    print(f"max |log pi - log mu| untempered: {float(stale_ratio):.4f}")
    if not chat:
        assert float(stale_ratio) > 0.05
