"""`tandem ingest` against the running Redis: poison lines (token ids past the model's vocabulary, more
tokens than its positions) are left out, named by file and line, and written to a dead-letter file
while the good lines are stored; out-of-range numbers are errors naming the file and line, not
tracebacks; `--reward-url` sends the reward token as a bearer token."""

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from buffer_support import RewardServer

from core.buffer.ingest import IngestError, parse_offline_file
from core.buffer.redis_buffer import RedisBuffer
from core.buffer.screening import ModelLimits, model_limits, poison_reason
from core.config.buffer import BufferConfig
from core.schemas import Sample, ScoredGroup
from services.cli import main


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"tandem-screen-{uuid.uuid4().hex[:8]}"
    yield name
    RedisBuffer(BufferConfig(kind="redis", namespace=name)).delete_all()


def write_lines(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def model_dir(tmp_path: Path, vocab_size: int = 300, positions: int = 16) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    config = {"model_type": "qwen2", "vocab_size": vocab_size, "max_position_embeddings": positions}
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def group(prompt_ids: list[int], completion_ids: list[int]) -> ScoredGroup:
    samples = [Sample("p", prompt_ids, completion_ids, "x", None, "stop", 0, "a") for _ in range(2)]
    return ScoredGroup("g", "p", prompt_ids, samples, [0.0, 1.0], ["ok", "ok"], [{}, {}])


def test_poison_reasons_from_the_model_config(tmp_path: Path) -> None:
    limits = model_limits(model_dir(tmp_path))
    assert limits == ModelLimits(vocab_size=300, max_positions=16)
    assert poison_reason(group([1, 2], [3, 299]), limits) is None
    assert "prompt token id 300 outside the vocabulary [0, 300)" in str(
        poison_reason(group([300], [1]), limits)
    )
    assert "token id -1" in str(poison_reason(group([1], [-1]), limits))
    assert "17 tokens" in str(poison_reason(group([1] * 7, [2] * 10), limits))
    assert "no prompt tokens" in str(poison_reason(group([], [1]), limits))


def test_poison_lines_are_dead_lettered_by_file_and_line_and_the_rest_stored(
    tmp_path: Path, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    good = {"prompt": "1+1=", "completions": ["2", "3"], "rewards": [1, 0]}
    data = write_lines(
        tmp_path / "mixed.jsonl",
        [
            {**good, "prompt_token_ids": [1, 2], "completion_token_ids": [[3], [4]]},
            {
                **good,
                "prompt_id": "past-vocab",
                "prompt_token_ids": [1, 2],
                "completion_token_ids": [[3], [512]],
            },
            {
                **good,
                "prompt_id": "too-long",
                "prompt_token_ids": [1] * 10,
                "completion_token_ids": [[3] * 7, [4]],
            },
            {**good, "prompt_id": "kept", "prompt_token_ids": [5], "completion_token_ids": [[6], [7]]},
        ],
    )
    dead_letter = tmp_path / "rejected.jsonl"
    code = main(
        ["ingest", str(data), "--buffer", "redis", "--model", str(model_dir(tmp_path)),
         "--dead-letter", str(dead_letter), "--set", f"buffer.namespace={namespace}"]
    )  # fmt: skip
    assert code == 0
    out, err = capsys.readouterr()
    assert "2 off-policy groups written to redis" in out
    assert f"{data}:2: left out, sample 1 has completion token id 512 outside the vocabulary [0, 300)" in err
    assert f"{data}:3: left out, sample 0 has 17 tokens" in err and "2 poison line(s)" in err
    letters = [json.loads(line) for line in dead_letter.read_text().splitlines()]
    assert [(letter["source_line"], letter["prompt_id"]) for letter in letters] == [
        (f"{data}:2", "past-vocab"),
        (f"{data}:3", "too-long"),
    ]
    assert "outside the vocabulary" in letters[0]["reason"] and letters[0]["samples"][1][
        "completion_token_ids"
    ] == [512]

    learner = RedisBuffer(BufferConfig(kind="redis", namespace=namespace, on_policy_fraction=0.0))
    seen = learner.sample(10, learner_version=0).groups  # what the learner gets: only the good lines
    assert sorted(g.samples[0].prompt_id for g in seen) == ["kept", "mixed-1"]


def test_the_default_dead_letter_file_is_beside_the_input(tmp_path: Path, namespace: str) -> None:
    data = write_lines(
        tmp_path / "one.jsonl",
        [{"prompt": "a", "completions": ["x", "y"], "rewards": [0, 1], "prompt_token_ids": [999],
          "completion_token_ids": [[1], [2]]}],
    )  # fmt: skip
    args = ["ingest", str(data), "--buffer", "redis", "--model", str(model_dir(tmp_path))]
    assert main([*args, "--set", f"buffer.namespace={namespace}"]) == 0
    (letter,) = [
        json.loads(line) for line in (tmp_path / "one.jsonl.dead_letter.jsonl").read_text().splitlines()
    ]
    assert letter["source_line"] == f"{data}:1" and "999" in letter["reason"]


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"prompt": "a", "completions": ["x", "y"], "rewards": [1' + "0" * 400 + ", 0]}", "'rewards'"),
        ('{"prompt": "a", "completions": ["x", "y"], "rewards": [1, -1' + "0" * 400 + "]}", "'rewards'"),
        (json.dumps({"prompt": "a", "completions": ["x", "y"], "rewards": [1, 0], "policy_version": 2**70}),
         "'policy_version' must be a non-negative integer below 2**63"),
        (json.dumps({"prompt": "a", "completions": ["x", "y"], "rewards": [1, 0], "truncated": "yes"}),
         "'truncated'"),
    ],
)  # fmt: skip
def test_out_of_range_numbers_name_the_file_and_line(
    tmp_path: Path, namespace: str, line: str, field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_lines(
        tmp_path / "big.jsonl", ['{"prompt": "ok", "completions": ["1", "2"], "rewards": [0, 1]}', line]
    )
    with pytest.raises(IngestError, match=r"big\.jsonl:2: field " + field.replace("*", r"\*")):
        parse_offline_file(path)
    assert main(["ingest", str(path), "--buffer", "redis", "--set", f"buffer.namespace={namespace}"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: field {field}" in err and "Traceback" not in err


def test_reward_url_sends_the_reward_token_as_a_bearer(
    tmp_path: Path, namespace: str, reward_server: RewardServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_lines(
        tmp_path / "unscored.jsonl",
        [
            {
                "prompt": "1+1=",
                "completions": ["2", "3"],
                "prompt_token_ids": [1],
                "completion_token_ids": [[2], [3]],
            }
        ],
    )
    args = ["ingest", str(data), "--buffer", "redis", "--reward-url", reward_server.url,
            "--set", f"buffer.namespace={namespace}"]  # fmt: skip
    assert main([*args, "--set", "reward.auth_token=from-the-config"]) == 0
    monkeypatch.setenv("TANDEM_REWARD__AUTH_TOKEN", "from-the-environment")  # as compose passes it
    assert main(args) == 0
    assert reward_server.authorization == ["Bearer from-the-config", "Bearer from-the-environment"]
