"""Tiny models: tokenizer round-trips, tasks are well-formed, the policy loads in transformers and vLLM."""

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.tinymodels.tasks import flawed_target, make_problem, read_jsonl, split_problems
from core.tinymodels.tokenizer import build_tokenizer


def test_tokenizer_is_one_token_per_character_and_round_trips() -> None:
    tokenizer = build_tokenizer()
    for text in ["17+25=", "def f(x):\n    return x*3+1", "  spaces\tand tabs", "é"]:
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
    assert tokenizer.encode("17+25=") == [ord(c) for c in "17+25="]
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id, len(tokenizer)) == (256, 257, 258)


def test_arithmetic_mistake_is_the_dropped_carry() -> None:
    rng = random.Random(0)
    for index in range(200):
        problem = make_problem("arithmetic", rng, index)
        a, b = problem.metadata["a"], problem.metadata["b"]
        assert problem.prompt == f"{a}+{b}=" and problem.reference == str(a + b)
        wrong = flawed_target("arithmetic", problem, random.Random(1), correct_fraction=0.0)
        assert (wrong == problem.reference) == (not problem.metadata["carry"])
    # The worked example from the docstring.
    from core.tinymodels.tasks import Problem, _arithmetic_mistake

    assert _arithmetic_mistake(Problem("x", "17+25=", "42", metadata={"a": 17, "b": 25})) == "32"


def test_code_problems_have_tests_the_reference_passes_and_the_mistake_fails() -> None:
    rng = random.Random(0)
    for index in range(50):
        problem = make_problem("code", rng, index)
        namespace: dict = {}
        exec(problem.prompt + problem.reference, namespace)  # our own generated code, not model output
        for test in problem.tests or []:
            exec(test, namespace)
        if problem.metadata["slope"] != problem.metadata["intercept"]:
            wrong: dict = {}
            exec(problem.prompt + flawed_target("code", problem, rng, 0.0), wrong)
            with pytest.raises(AssertionError):
                for test in problem.tests or []:
                    exec(test, wrong)


def test_splits_are_disjoint_and_deterministic() -> None:
    train, held_out = split_problems("arithmetic", seed=3, n_train=300, n_eval=50)
    assert not {p.prompt for p in train} & {p.prompt for p in held_out}
    assert split_problems("arithmetic", seed=3, n_train=300, n_eval=50)[1] == held_out


@pytest.mark.slow
def test_policy_loads_in_transformers_and_answers_partly_right(tiny_arith_model: Path) -> None:
    report = json.loads((tiny_arith_model / "tandem_model.json").read_text())
    assert 500_000 <= report["parameters"] <= 5_000_000
    assert 0.15 <= report["eval_greedy_accuracy"] <= 0.6, report  # room for RL, yet a useful start
    tokenizer = AutoTokenizer.from_pretrained(tiny_arith_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_arith_model)
    problems = read_jsonl(tiny_arith_model / "prompts" / "eval.jsonl")
    assert len(problems) == 200 and all(p.reference for p in problems)
    encoded = tokenizer(problems[0].prompt, return_tensors="pt")
    output = model.generate(**encoded, max_new_tokens=6, do_sample=False)
    completion = tokenizer.decode(output[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    assert completion.strip().isdigit(), completion


@pytest.mark.slow
def test_policy_generates_in_vllm_with_logprobs_matching_transformers(tiny_arith_model: Path) -> None:
    from actors.engine import GenerationEngine, PromptRequest, SamplingSettings

    problems = read_jsonl(tiny_arith_model / "prompts" / "eval.jsonl")[:8]
    engine = GenerationEngine(tiny_arith_model, seed=0)
    requests = [PromptRequest(p.prompt_id, p.prompt) for p in problems]
    groups = engine.generate(requests, n=4, sampling=SamplingSettings(max_tokens=8, seed=0))
    engine.close()
    assert [len(group) for group in groups] == [4] * 8
    samples = [sample for group in groups for sample in group]
    assert all(
        s.completion_token_ids and len(s.behaviour_logprobs or []) == len(s.completion_token_ids)
        for s in samples
    )
    assert sum(s.completion_text.strip().isdigit() for s in samples) >= 24, [
        s.completion_text for s in samples
    ]
    # The same sequences scored by a transformers forward pass: per-token log-probs agree (fp32).
    model = AutoModelForCausalLM.from_pretrained(tiny_arith_model, torch_dtype=torch.float32)
    worst = 0.0
    for sample in samples:
        ids = torch.tensor([sample.prompt_token_ids + sample.completion_token_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, len(sample.prompt_token_ids) - 1 : -1].float()
        reference = torch.log_softmax(logits, -1).gather(
            1, torch.tensor(sample.completion_token_ids)[:, None]
        )
        difference = (reference[:, 0] - torch.tensor(sample.behaviour_logprobs)).abs().max().item()
        worst = max(worst, difference)
    print(f"max |logprob(vLLM) - logprob(transformers)| = {worst:.2e}")
    assert worst < 1e-3
