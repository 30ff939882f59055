"""Real vLLM on the tiny model: weights published from transformers load into the running engine,
change what it generates, verify by checksum, and give log-probs equal to a transformers forward pass."""

import copy
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.tinymodels.tasks import read_jsonl
from core.weight_sync import WeightSyncError, encode_weights
from core.weight_sync.manifest import PublishedWeights
from tests.generation_support import greedy_disagreements

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(tiny_arith_model: Path):  # type: ignore[no-untyped-def]
    from actors.engine import GenerationEngine

    engine = GenerationEngine(tiny_arith_model, seed=0)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def retrained(tiny_arith_model: Path) -> torch.nn.Module:
    """A differently trained policy: 60 supervised steps on always-correct sums (the warm start saw 20 %)."""
    from core.tinymodels.policy import _encode_sft

    torch.manual_seed(1)
    tokenizer = AutoTokenizer.from_pretrained(tiny_arith_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_arith_model, torch_dtype=torch.float32)
    problems = read_jsonl(tiny_arith_model / "prompts" / "train.jsonl")
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    rng = random.Random(0)
    model.train()
    for _ in range(60):
        batch = [rng.choice(problems) for _ in range(64)]
        input_ids, labels = _encode_sft(tokenizer, [p.prompt for p in batch], [p.reference for p in batch])
        loss = model(
            input_ids=input_ids, attention_mask=input_ids.ne(tokenizer.pad_token_id), labels=labels
        ).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def greedy(engine, prompts: list[str]) -> list[tuple[list[int], list[int]]]:  # type: ignore[no-untyped-def]
    """vLLM's greedy `(prompt ids, completion ids)` for each prompt."""
    from actors.engine import PromptRequest, SamplingSettings

    requests = [PromptRequest(str(i), p) for i, p in enumerate(prompts)]
    groups = engine.generate(requests, n=1, sampling=SamplingSettings(temperature=0.0, max_tokens=6))
    return [(list(g[0].prompt_token_ids), list(g[0].completion_token_ids)) for g in groups]


def test_published_weights_load_without_restart_and_change_generation(
    engine, retrained: torch.nn.Module, tiny_arith_model: Path
) -> None:  # type: ignore[no-untyped-def]
    prompts = [p.prompt for p in read_jsonl(tiny_arith_model / "prompts" / "eval.jsonl")[:40]]
    before = greedy(engine, prompts)
    digest_before = engine.parameter_digest()

    version = engine.load_weights(encode_weights(retrained.state_dict(), version=1))

    after = greedy(engine, prompts)
    assert version == 1 and engine.policy_version == 1
    assert engine.parameter_digest() != digest_before
    assert after != before, "the engine kept generating from the old weights"
    # Every token vLLM now picks greedily is the new model's arg-max (up to near-ties).
    disagreements = greedy_disagreements(retrained, after)
    assert not disagreements, "vLLM and transformers disagree on the new weights: " + "; ".join(disagreements)


def worst_logprob_gap(engine, model: torch.nn.Module, model_path: Path, version: int) -> float:  # type: ignore[no-untyped-def]
    """The parity check after a weight sync, for every transport: sample with vLLM, then the largest
    |behaviour log-prob - transformers log-prob| over all sampled tokens (each sample stamped `version`)."""
    from actors.engine import PromptRequest, SamplingSettings

    problems = read_jsonl(model_path / "prompts" / "eval.jsonl")[:16]
    requests = [PromptRequest(p.prompt_id, p.prompt) for p in problems]
    groups = engine.generate(requests, n=4, sampling=SamplingSettings(max_tokens=8, seed=3))
    worst = 0.0
    for sample in (s for group in groups for s in group):
        assert sample.policy_version == version
        ids = torch.tensor([sample.prompt_token_ids + sample.completion_token_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, len(sample.prompt_token_ids) - 1 : -1]
        expected = torch.log_softmax(logits.float(), -1)[
            torch.arange(len(sample.completion_token_ids)), ids[0, len(sample.prompt_token_ids) :]
        ]
        worst = max(worst, (expected - torch.tensor(sample.behaviour_logprobs)).abs().max().item())
    return worst


def test_logprobs_after_load_match_transformers(
    engine, retrained: torch.nn.Module, tiny_arith_model: Path
) -> None:  # type: ignore[no-untyped-def]
    engine.load_weights(encode_weights(retrained.state_dict(), version=2))
    worst = worst_logprob_gap(engine, retrained, tiny_arith_model, version=2)
    print(f"log-prob parity after a weight load: max |vLLM - transformers| = {worst:.2e}")
    assert worst < 1e-3


def test_corrupt_weights_are_refused_and_the_version_is_kept(engine, retrained: torch.nn.Module) -> None:  # type: ignore[no-untyped-def]
    current = engine.policy_version
    digest = engine.parameter_digest()
    published = encode_weights(retrained.state_dict(), version=current + 1)
    corrupt = bytearray(published.blob)
    corrupt[len(corrupt) // 2] ^= 0x55
    with pytest.raises(WeightSyncError, match=f"v{current + 1}"):
        engine.load_weights(PublishedWeights(published.manifest, bytes(corrupt)))
    assert engine.policy_version == current
    assert engine.parameter_digest() == digest  # nothing was half-loaded


def test_weights_of_another_shape_or_name_are_refused_before_loading(
    engine, retrained: torch.nn.Module
) -> None:  # type: ignore[no-untyped-def]
    current = engine.policy_version
    digest = engine.parameter_digest()
    wrong_shape = copy.deepcopy(retrained.state_dict())
    wrong_shape["model.norm.weight"] = torch.ones(7)
    with pytest.raises(WeightSyncError, match=r"model\.norm\.weight has shape \(7,\)"):
        engine.load_weights(encode_weights(wrong_shape, version=current + 1))
    unknown_name = copy.deepcopy(retrained.state_dict())
    unknown_name["model.layers.9.mlp.down_proj.weight"] = torch.zeros(128, 384)
    with pytest.raises(WeightSyncError, match=r"layers\.9\.mlp\.down_proj\.weight matches no parameter"):
        engine.load_weights(encode_weights(unknown_name, version=current + 1))
    assert engine.policy_version == current
    assert engine.parameter_digest() == digest  # nothing was half-loaded
