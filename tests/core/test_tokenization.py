"""Offline rows are tokenised exactly as actor rows: one prompt and completion give the same token ids
through the actor's engine and through `tandem ingest`, with the tiny tokenizer and with one that adds
BOS; the completion ends with EOS unless the line is marked `"truncated": true`. The actor path runs
GenerationEngine.generate over a scripted vLLM here, and over a real vLLM engine in the slow test."""

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tokenizers import processors
from transformers import PreTrainedTokenizerFast

from core.buffer.ingest import build_offline_groups, hf_tokenizer, parse_offline_file
from core.schemas import ScoredGroup
from core.tinymodels.tokenizer import build_tokenizer
from core.tokenization import completion_token_ids, load_tokenizer, prompt_token_ids

PROMPT, COMPLETION = "12+30=", "42"
BOS = "<|bos|>"


def tokenizer_with_bos() -> PreTrainedTokenizerFast:
    """The tiny tokenizer with a BOS that encoding adds in front (a TemplateProcessing post-processor,
    as Llama-style tokenizers have)."""
    tokenizer = build_tokenizer()
    tokenizer.add_special_tokens({"bos_token": BOS})
    bos_id = tokenizer.convert_tokens_to_ids(BOS)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return tokenizer


@pytest.fixture(params=["tiny", "bos"])
def tokenizer_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    directory = tmp_path / request.param
    (build_tokenizer() if request.param == "tiny" else tokenizer_with_bos()).save_pretrained(directory)
    return directory


def ingested(tmp_path: Path, tokenizer_dir: Path, **line: Any) -> ScoredGroup:
    path = tmp_path / "offline.jsonl"
    row = {"prompt": PROMPT, "completions": [COMPLETION, "4"], "rewards": [1.0, 0.0], **line}
    path.write_text(json.dumps(row) + "\n")
    (group,) = build_offline_groups(parse_offline_file(path), hf_tokenizer(tokenizer_dir), None)
    return group


class ScriptedLLM:
    """vLLM's `LLM` as GenerationEngine uses it: the engine's tokenizer, and `generate` over token-id
    prompts, answering each with `COMPLETION` ended by EOS (a sample that finished on its own)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.prompts: list[Any] = []

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    def generate(self, prompts: list[Any], params: Any, use_tqdm: bool) -> list[Any]:
        self.prompts += prompts
        completion_ids = [*self.tokenizer(COMPLETION, add_special_tokens=False)["input_ids"]]
        completion_ids.append(self.tokenizer.eos_token_id)
        completion = SimpleNamespace(
            token_ids=completion_ids,
            text=COMPLETION,
            logprobs=[{token: SimpleNamespace(logprob=-0.1)} for token in completion_ids],
            finish_reason="stop",
        )
        return [
            SimpleNamespace(prompt_token_ids=p["prompt_token_ids"], outputs=[completion]) for p in prompts
        ]


def test_the_actor_and_ingest_give_the_same_token_ids(tmp_path: Path, tokenizer_dir: Path) -> None:
    from actors.engine import GenerationEngine
    from actors.sampling import PromptRequest, SamplingSettings

    tokenizer = load_tokenizer(tokenizer_dir)
    engine = GenerationEngine.__new__(GenerationEngine)  # no vLLM process: its LLM is scripted
    engine.llm, engine.policy_version = ScriptedLLM(tokenizer), 0
    (actor,) = engine.generate([PromptRequest("p", PROMPT)], n=1, sampling=SamplingSettings())[0]

    offline = ingested(tmp_path, tokenizer_dir).samples[0]
    assert list(offline.prompt_token_ids) == list(actor.prompt_token_ids)
    assert list(offline.completion_token_ids) == list(actor.completion_token_ids)
    # What vLLM's own text rendering gives (add_special_tokens=True), i.e. with BOS where it adds one.
    assert list(actor.prompt_token_ids) == tokenizer(PROMPT, add_special_tokens=True)["input_ids"]
    if tokenizer.bos_token == BOS:
        assert actor.prompt_token_ids[0] == tokenizer.bos_token_id
    assert offline.completion_token_ids[-1] == tokenizer.eos_token_id


def test_a_truncated_line_gets_no_eos(tmp_path: Path, tokenizer_dir: Path) -> None:
    tokenizer = load_tokenizer(tokenizer_dir)
    cut = ingested(tmp_path, tokenizer_dir, truncated=True)
    text_ids = tokenizer(COMPLETION, add_special_tokens=False)["input_ids"]
    assert list(cut.samples[0].completion_token_ids) == text_ids  # a prefix: no EOS
    per_completion = ingested(tmp_path, tokenizer_dir, truncated=[False, True])
    assert per_completion.samples[0].completion_token_ids[-1] == tokenizer.eos_token_id
    assert per_completion.samples[1].completion_token_ids[-1] != tokenizer.eos_token_id


def test_the_shared_functions() -> None:
    bos = tokenizer_with_bos()
    assert prompt_token_ids(bos, "ab") == [bos.bos_token_id, ord("a"), ord("b")]
    assert completion_token_ids(bos, "ab") == [ord("a"), ord("b"), bos.eos_token_id]  # no BOS inside
    assert completion_token_ids(bos, "ab", truncated=True) == [ord("a"), ord("b")]
    tiny = build_tokenizer()
    assert prompt_token_ids(tiny, "ab") == [ord("a"), ord("b")]


@pytest.mark.slow
def test_vllm_tokenises_and_ends_samples_as_ingest_does(tmp_path: Path) -> None:
    """A real vLLM engine on a random tiny Qwen2 whose tokenizer adds BOS: the prompt ids the actor's
    engine reports equal ingest's and vLLM's own tokenisation of the text; a sample that ends on its
    own (only EOS allowed) carries EOS in its token ids, which is what ingest appends."""
    import torch
    from transformers import Qwen2ForCausalLM

    from actors.engine import GenerationEngine
    from actors.sampling import PromptRequest, SamplingSettings
    from core.tinymodels.architecture import tiny_qwen2_config

    tokenizer = tokenizer_with_bos()
    model_dir = tmp_path / "bos-model"
    config = tiny_qwen2_config(
        tokenizer, hidden_size=64, intermediate_size=128, num_layers=1, num_heads=2, num_kv_heads=2,
        max_positions=64, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)

    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    engine = GenerationEngine(model_dir, max_model_len=64)
    try:
        (actor,) = engine.generate([PromptRequest("p", PROMPT)], 1, SamplingSettings(max_tokens=4))[0]
        offline = ingested(tmp_path, model_dir).samples[0]
        assert list(actor.prompt_token_ids) == list(offline.prompt_token_ids)
        assert actor.prompt_token_ids[0] == tokenizer.bos_token_id
        (by_text,) = engine.llm.generate([PROMPT], SamplingParams(max_tokens=1), use_tqdm=False)
        assert list(by_text.prompt_token_ids) == list(offline.prompt_token_ids)
        only_eos = SamplingParams(max_tokens=4, allowed_token_ids=[tokenizer.eos_token_id])
        (ended,) = engine.llm.generate(
            [TokensPrompt(prompt_token_ids=list(offline.prompt_token_ids))], only_eos, use_tqdm=False
        )
        assert list(ended.outputs[0].token_ids) == [tokenizer.eos_token_id]
        assert offline.completion_token_ids[-1] == tokenizer.eos_token_id
    finally:
        engine.close()
