"""Real vLLM on the BPE tiny model (it has a chat template): a chat prompt rendered once by
core/tokenization.py generates through actors/engine.py unchanged, and its samples carry exactly
the rendered ids, which are also what vLLM's own tokenizer renders the messages to."""

from pathlib import Path

import pytest

from actors.sampling import PromptRequest, SamplingSettings
from core.tokenization import load_tokenizer, prompt_token_ids, render_chat

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "system", "content": "Add."}, {"role": "user", "content": "12+30="}]


@pytest.fixture(scope="module")
def engine(tiny_arith_bpe_model: Path):  # type: ignore[no-untyped-def]
    from actors.engine import GenerationEngine

    engine = GenerationEngine(tiny_arith_bpe_model, seed=0)
    yield engine
    engine.close()


def test_a_messages_prompt_generates_with_the_rendered_ids(engine, tiny_arith_bpe_model: Path) -> None:  # type: ignore[no-untyped-def]
    tokenizer = load_tokenizer(tiny_arith_bpe_model)
    rendered = render_chat(tokenizer, MESSAGES, tiny_arith_bpe_model)
    vllm_rendered = engine.llm.get_tokenizer().apply_chat_template(
        MESSAGES, tokenize=True, add_generation_prompt=True
    )
    vllm_ids = vllm_rendered["input_ids"] if hasattr(vllm_rendered, "keys") else vllm_rendered
    assert list(rendered.token_ids) == list(vllm_ids)
    requests = [PromptRequest("chat", rendered), PromptRequest("text", "12+30=")]
    chat, text = engine.generate(requests, 2, SamplingSettings(max_tokens=6, seed=0), "actor-0")
    for sample in chat:
        assert list(sample.prompt_token_ids) == list(rendered.token_ids)
        assert sample.completion_token_ids and len(sample.behaviour_logprobs) == len(
            sample.completion_token_ids
        )
    assert all(list(sample.prompt_token_ids) == prompt_token_ids(tokenizer, "12+30=") for sample in text)


def test_tandem_generate_renders_chat_prompts_from_parquet(
    tiny_arith_bpe_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow
    import pyarrow.parquet

    from services.cli import main

    path = tmp_path / "chat.parquet"
    rows = [{"messages": [{"role": "user", "content": "12+30="}], "reference": "42"}]
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), path)
    argv = ["generate", "--model", str(tiny_arith_bpe_model), "--prompts", str(path), "--n", "2"]
    assert main([*argv, "--max-tokens", "4"]) == 0
    rendered = render_chat(load_tokenizer(tiny_arith_bpe_model), rows[0]["messages"], tiny_arith_bpe_model)
    assert repr(rendered.text) in capsys.readouterr().out  # each line shows the prompt as the model saw it
