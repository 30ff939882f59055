"""The `bpe` tiny tokenizer and the policy built with it: a byte-level BPE trained on the task's text,
with BOS added on encode, EOS and pad, a ChatML-like chat template; the policy loads in transformers
and generates in vLLM as transformers would (greedy), with the prompt ids the actors use."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from core.tinymodels.policy import TASK_RECIPES, make_tokenizer
from core.tinymodels.tasks import Problem, TaskName, read_jsonl, split_problems
from core.tinymodels.tokenizer import BOS_TOKEN, EOS_TOKEN, IM_START_TOKEN, PAD_TOKEN, save_tokenizer
from core.tokenization import completion_token_ids, prompt_token_ids

MESSAGES = [
    {"role": "system", "content": "Answer with the sum."},
    {"role": "user", "content": "17+25="},
    {"role": "assistant", "content": "42"},
    {"role": "user", "content": "30+12="},
]


TaskTokenizer = tuple[PreTrainedTokenizerFast, list[Problem]]


def task_split(task: TaskName) -> tuple[list[Problem], list[Problem]]:
    recipe = TASK_RECIPES[task]
    return split_problems(task, seed=0, n_train=recipe.n_train, n_eval=recipe.n_eval)


@pytest.fixture(scope="module", params=["arithmetic", "code"])
def task_tokenizer(request: pytest.FixtureRequest) -> TaskTokenizer:
    """The bpe tokenizer as a build makes it (trained on the training split), with every problem."""
    train, held_out = task_split(request.param)
    return make_tokenizer("bpe", train), train + held_out


def test_bpe_round_trips_task_text_and_any_text(task_tokenizer: TaskTokenizer) -> None:
    tokenizer, problems = task_tokenizer
    texts = [text for p in problems for text in (p.prompt, p.reference)]
    texts += ["  spaces\tand tabs", "é and ünïcode ✓", "17+25=42\n"]  # bytes never seen in training
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
        assert tokenizer.unk_token_id is None or tokenizer.unk_token_id not in ids


def test_bpe_has_distinct_bos_eos_pad_and_adds_bos_on_encode(task_tokenizer: TaskTokenizer) -> None:
    tokenizer, problems = task_tokenizer
    names = (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token)
    assert names == (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN)
    special = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    assert len(special) == 3 and None not in special
    for problem in problems[:50]:
        bare = tokenizer(problem.prompt, add_special_tokens=False)["input_ids"]
        assert tokenizer(problem.prompt)["input_ids"] == [tokenizer.bos_token_id, *bare]
        # The actors' tokenisation: BOS + prompt; the completion without BOS, ending with EOS.
        assert prompt_token_ids(tokenizer, problem.prompt) == [tokenizer.bos_token_id, *bare]
        completion = completion_token_ids(tokenizer, problem.reference)
        assert completion[-1] == tokenizer.eos_token_id and tokenizer.bos_token_id not in completion
        assert special.isdisjoint(bare)


def test_bpe_merges_text_but_keeps_every_digit_a_token(task_tokenizer: TaskTokenizer) -> None:
    tokenizer, problems = task_tokenizer
    for problem in problems:
        for text in (problem.prompt, problem.reference):
            tokens = tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])
            assert len(tokens) <= len(text.encode())
            assert all(len(token) == 1 for token in tokens if any(c.isdigit() for c in token)), tokens


def test_bpe_has_merges_on_code_text() -> None:
    """`code` prompts have words and indentation to merge (arithmetic has none: digits stay single)."""
    train, held_out = task_split("code")
    tokenizer = make_tokenizer("bpe", train)
    assert len(tokenizer) > 256 + 4, "no token beyond the bytes and the special tokens"
    for problem in train + held_out:
        tokens = len(tokenizer(problem.prompt, add_special_tokens=False)["input_ids"])
        assert tokens < 0.7 * len(problem.prompt.encode()), problem.prompt


def test_chat_template_renders_roles_and_generation_prompt(tmp_path: Path) -> None:
    train, _ = task_split("arithmetic")
    save_tokenizer(make_tokenizer("bpe", train), tmp_path)
    assert "chat_template" in json.loads((tmp_path / "tokenizer_config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    text = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert text == (
        f"{BOS_TOKEN}{IM_START_TOKEN}system\nAnswer with the sum.{EOS_TOKEN}\n"
        f"{IM_START_TOKEN}user\n17+25={EOS_TOKEN}\n{IM_START_TOKEN}assistant\n42{EOS_TOKEN}\n"
        f"{IM_START_TOKEN}user\n30+12={EOS_TOKEN}\n{IM_START_TOKEN}assistant\n"
    )
    without = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=False, tokenize=False)
    assert text == without + f"{IM_START_TOKEN}assistant\n"
    # Tokenised, the rendered chat holds one BOS, in front, and each marker is one special token.
    ids = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if not isinstance(ids, list) else ids
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert ids.count(tokenizer.convert_tokens_to_ids(IM_START_TOKEN)) == 5
    with pytest.raises(Exception, match="roles are system, user and assistant"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_make_model_cli_takes_the_tokenizer_choice() -> None:
    import argparse

    from services.cli.model_cmd import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    assert parser.parse_args(["make-model", "--out", "x"]).tokenizer == "char"  # the demo's default
    assert parser.parse_args(["make-model", "--out", "x", "--tokenizer", "bpe"]).tokenizer == "bpe"


@pytest.mark.slow
def test_bpe_policy_loads_in_transformers_and_answers_partly_right(tiny_arith_bpe_model: Path) -> None:
    report = json.loads((tiny_arith_bpe_model / "tandem_model.json").read_text())
    assert report["tokenizer"] == "bpe"
    assert 0.15 <= report["eval_greedy_accuracy"] <= 0.6, report  # room for RL, yet a useful start
    tokenizer = AutoTokenizer.from_pretrained(tiny_arith_bpe_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_arith_bpe_model)
    assert model.config.vocab_size == len(tokenizer) == report["vocab_size"]
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    assert tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    problems = read_jsonl(tiny_arith_bpe_model / "prompts" / "eval.jsonl")
    encoded = tokenizer(problems[0].prompt, return_tensors="pt")
    assert encoded["input_ids"][0, 0] == tokenizer.bos_token_id
    output = model.generate(**encoded, max_new_tokens=6, do_sample=False)
    completion = tokenizer.decode(output[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    assert completion.strip().isdigit(), completion


@pytest.mark.slow
def test_bpe_policy_generates_greedily_in_vllm_as_in_transformers(tiny_arith_bpe_model: Path) -> None:
    from actors.engine import GenerationEngine, PromptRequest, SamplingSettings
    from tests.generation_support import greedy_disagreements

    tokenizer = AutoTokenizer.from_pretrained(tiny_arith_bpe_model)
    problems = read_jsonl(tiny_arith_bpe_model / "prompts" / "eval.jsonl")[:40]
    engine = GenerationEngine(tiny_arith_bpe_model, seed=0)
    try:
        requests = [PromptRequest(p.prompt_id, p.prompt) for p in problems]
        groups = engine.generate(requests, n=1, sampling=SamplingSettings(temperature=0.0, max_tokens=6))
        # vLLM's own tokenizer renders the chat template as transformers does.
        engine_tokenizer = engine.llm.get_tokenizer()
        rendered = engine_tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    finally:
        engine.close()
    assert rendered == tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    samples = [group[0] for group in groups]
    for problem, sample in zip(problems, samples, strict=True):
        assert list(sample.prompt_token_ids) == prompt_token_ids(tokenizer, problem.prompt)
        assert sample.prompt_token_ids[0] == tokenizer.bos_token_id
    # A warm-started model answers a number and stops: its greedy completions end with EOS.
    finished = [s for s in samples if s.completion_token_ids[-1] == tokenizer.eos_token_id]
    assert len(finished) >= 30, [s.completion_text for s in samples]
    assert all(s.completion_text.strip().isdigit() for s in finished), [s.completion_text for s in finished]
    model = AutoModelForCausalLM.from_pretrained(tiny_arith_bpe_model, dtype=torch.float32).eval()
    disagreements = greedy_disagreements(
        model, [(s.prompt_token_ids, s.completion_token_ids) for s in samples]
    )
    assert not disagreements, "vLLM and transformers disagree: " + "; ".join(disagreements)
