"""Chat prompts (`messages`): parsing and validation, rendering by the chat template to the ids
transformers' apply_chat_template gives, the error for a tokenizer without a template (at pre-flight,
in `tandem prompts push`, in offline ingest), and offline rows that carry the rendered ids.

The tokenizers are the tiny models' own builders (no model needed): the BPE one has a chat
template, the char-level one has none.
"""

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.buffer.ingest import IngestError, OfflineTokenizer, parse_offline_file, prepare_offline_groups
from core.prompts import PromptFileError, read_prompt_file
from core.prompts.record import parse_prompt_line, scoring_metadata
from core.prompts.redis_source import PromptStream
from core.tinymodels.tokenizer import build_bpe_tokenizer, build_tokenizer, save_tokenizer
from core.tokenization import (
    ChatRenderer,
    ChatTemplateError,
    has_chat_template,
    prompt_token_ids,
    render_chat,
)
from services.cli import main
from services.orchestration.preflight import PreflightError, check_offline_files, check_prompt_file

MESSAGES = [
    {"role": "system", "content": "Add the numbers."},
    {"role": "user", "content": "12+30="},
]
TEXTS = ["12+30=", "42", "Add the numbers.", "1+1=", "2"]


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("bpe")
    save_tokenizer(build_bpe_tokenizer(TEXTS), directory)
    return directory


@pytest.fixture(scope="module")
def char_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("char")
    build_tokenizer().save_pretrained(directory)
    return directory


def load(directory: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_records_with_messages_parse_and_round_trip(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "chat.jsonl", [{"messages": MESSAGES, "reference": "42"}, {"prompt": "1+1="}]
    )
    chat, text = read_prompt_file(path)
    assert (chat.prompt, chat.messages, chat.reference) == (None, MESSAGES, "42")
    assert (text.prompt, text.messages) == ("1+1=", None)
    # What `tandem prompts push` writes to the stream and the stream source reads back.
    assert parse_prompt_line(json.dumps(chat.to_dict()), "entry", "unused") == chat
    assert "prompt" not in chat.to_dict()
    assert scoring_metadata({"level": 1}, chat.messages) == {"level": 1, "messages": MESSAGES}
    assert scoring_metadata({"level": 1}, None) == {"level": 1}


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"prompt": "x", "messages": MESSAGES}, "give field 'prompt' or field 'messages', not both"),
        ({"messages": []}, "field 'messages' must be a non-empty list of {role, content} objects"),
        ({"messages": "hi"}, "field 'messages' must be a non-empty list"),
        ({"messages": ["hi"]}, "(message 0 is str)"),
        ({"messages": [{"role": "user"}]}, "(message 0 has keys ['role'])"),
        (
            {"messages": [{"role": "user", "content": "x", "name": "n"}]},
            "has keys ['content', 'name', 'role']",
        ),
        (
            {"messages": [{"role": "", "content": "x"}]},
            "(message 0: role a non-empty string, content a string)",
        ),
        ({"messages": [{"role": "user", "content": 3}]}, "(message 0: role a non-empty string"),
        ({}, "field 'prompt' must be a non-empty string"),
    ],
)
def test_bad_messages_name_the_file_line_and_field(tmp_path: Path, record: dict, message: str) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "fine"}, record])
    with pytest.raises(PromptFileError, match=re.escape(f"{path}:2: ") + ".*" + re.escape(message)):
        read_prompt_file(path)


def test_rendering_gives_apply_chat_template_ids(bpe_dir: Path) -> None:
    tokenizer = load(bpe_dir)
    rendered = render_chat(tokenizer, MESSAGES, bpe_dir)
    expected = tokenizer.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=True)
    expected_ids = expected["input_ids"] if hasattr(expected, "keys") else expected
    assert list(rendered.token_ids) == list(expected_ids)
    assert rendered.text == tokenizer.apply_chat_template(
        MESSAGES, tokenize=False, add_generation_prompt=True
    )
    assert rendered.text.endswith("12+30=" + tokenizer.eos_token + "\n" + "<|im_start|>assistant\n")
    # The template writes BOS once; the ids are not tokenised again with special tokens added.
    assert rendered.token_ids[0] == tokenizer.bos_token_id and rendered.token_ids[1] != tokenizer.bos_token_id
    # What the engine hands vLLM: the rendered ids unchanged; a text prompt still tokenised with BOS.
    assert prompt_token_ids(tokenizer, rendered) == list(rendered.token_ids)
    assert prompt_token_ids(tokenizer, "1+1=") == list(tokenizer("1+1=")["input_ids"])
    assert ChatRenderer(tokenizer, bpe_dir)(MESSAGES) == rendered
    with pytest.raises(ChatTemplateError, match=re.escape(f"the chat template of {bpe_dir} refused")):
        render_chat(tokenizer, [{"role": "tool", "content": "x"}], bpe_dir)  # the template's own check


def test_a_tokenizer_without_a_template_is_refused_naming_the_model(
    bpe_dir: Path, char_dir: Path, tmp_path: Path
) -> None:
    assert has_chat_template(bpe_dir) and not has_chat_template(char_dir)
    assert not has_chat_template(tmp_path / "nowhere")
    with pytest.raises(
        ChatTemplateError, match=re.escape(f"the tokenizer of {char_dir} has no chat template")
    ):
        render_chat(load(char_dir), MESSAGES, char_dir)
    with pytest.raises(ChatTemplateError, match="has no chat template"):
        ChatRenderer(load(char_dir), char_dir).require_template()
    prompts = write_jsonl(
        tmp_path / "train.jsonl", [{"prompt": "1+1="}, {"prompt_id": "c", "messages": MESSAGES}]
    )
    assert check_prompt_file(prompts, "actors.train_prompts", model=bpe_dir) == 2
    with pytest.raises(
        PreflightError,
        match=re.escape(
            f"actors.train_prompts: {prompts} (prompt 'c') has chat prompts ('messages') but the "
        )
        + re.escape(f"tokenizer of {char_dir} has no chat template"),
    ):
        check_prompt_file(prompts, "actors.train_prompts", model=char_dir)
    text_only = write_jsonl(tmp_path / "text.jsonl", [{"prompt": "1+1="}])
    assert check_prompt_file(text_only, "actors.train_prompts", model=char_dir) == 1


def offline_line(**fields: object) -> dict:
    return {"completions": ["42", "41"], "rewards": [1.0, 0.0], **fields}


def test_offline_chat_lines_carry_the_rendered_ids(bpe_dir: Path, char_dir: Path, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "off.jsonl", [offline_line(messages=MESSAGES), offline_line(prompt="1+1=")])
    lines = parse_offline_file(path)
    assert lines[0].messages == MESSAGES and lines[0].prompt is None
    tokenizer = load(bpe_dir)
    batch = prepare_offline_groups(lines, OfflineTokenizer(tokenizer, None, str(bpe_dir)), score=None)
    chat, text = batch.groups
    rendered = render_chat(tokenizer, MESSAGES, bpe_dir)
    assert list(chat.prompt_token_ids) == list(rendered.token_ids) and chat.prompt == rendered.text
    assert all(list(sample.prompt_token_ids) == list(rendered.token_ids) for sample in chat.samples)
    assert list(text.prompt_token_ids) == prompt_token_ids(tokenizer, "1+1=")
    # Scored by the reward server: the rendered text, with the messages in the metadata.
    requests: list[list[dict]] = []

    def score(items: list[dict]) -> list[dict]:
        requests.append(items)
        return [{"reward": 1.0, "status": "ok", "scores": {}} for _ in items]

    unrewarded = parse_offline_file(
        write_jsonl(tmp_path / "u.jsonl", [{"messages": MESSAGES, "completions": ["a", "b"]}])
    )
    prepare_offline_groups(unrewarded, OfflineTokenizer(tokenizer, None, str(bpe_dir)), score)
    assert requests[0][0]["prompt"] == rendered.text and requests[0][0]["metadata"] == {"messages": MESSAGES}
    with pytest.raises(
        IngestError, match=re.escape(f"{path}:1: the tokenizer of {char_dir} has no chat template")
    ):
        prepare_offline_groups(lines, OfflineTokenizer(load(char_dir), None, str(char_dir)), score=None)
    with pytest.raises(IngestError, match=re.escape(f"{path}:1: field 'messages' needs the chat template")):
        prepare_offline_groups(lines, None, score=None)
    with pytest.raises(PreflightError, match=re.escape(f"buffer.offline_files.0: {path}:1 has chat prompts")):
        check_offline_files([path], model=char_dir)
    check_offline_files([path], model=bpe_dir)
    bad = write_jsonl(tmp_path / "bad.jsonl", [offline_line(prompt="x", messages=MESSAGES)])
    with pytest.raises(IngestError, match=re.escape(f"{bad}:1: give field 'prompt' or field 'messages'")):
        parse_offline_file(bad)


@pytest.fixture
def stream() -> Iterator[PromptStream]:
    queue = PromptStream("redis://127.0.0.1:6379/0", f"tandem-test-{uuid.uuid4().hex[:10]}:prompts")
    yield queue
    queue.delete()
    queue.close()


def test_prompts_push_refuses_chat_prompts_for_a_model_without_a_template(
    stream: PromptStream, bpe_dir: Path, char_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(tmp_path / "chat.jsonl", [{"prompt_id": "c", "messages": MESSAGES}])
    where = ["--set", f"actors.prompt_stream={stream.stream}", "--set", "actors.prompt_source=redis"]
    assert main(["prompts", "push", str(path), *where, "--set", f"model.path={char_dir}"]) == 2
    assert f"tokenizer of {char_dir} (model.path) has no chat template" in capsys.readouterr().err
    assert stream.stats().length == 0
    assert main(["prompts", "push", str(path), *where, "--set", f"model.path={bpe_dir}"]) == 0
    [(_, fields)] = stream.client.xrange(stream.stream)
    assert json.loads(fields[b"data"]) == {"prompt_id": "c", "messages": MESSAGES}


def test_generate_refuses_chat_prompts_for_a_model_without_a_template_before_starting_vllm(
    char_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_jsonl(tmp_path / "chat.jsonl", [{"prompt_id": "c", "messages": MESSAGES}])
    assert main(["generate", "--model", str(char_dir), "--prompts", str(path)]) == 2
    assert f"tandem generate: the tokenizer of {char_dir} has no chat template" in capsys.readouterr().err
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": ""}])
    assert main(["generate", "--model", str(char_dir), "--prompts", str(bad)]) == 2
    assert f"{bad}:1: field 'prompt' must be a non-empty string" in capsys.readouterr().err
