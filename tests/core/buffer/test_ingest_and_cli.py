"""`tandem ingest` and `tandem buffer stats` against the running Redis; all-or-nothing ingestion;
scoring through a real HTTP reward server."""

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from buffer_support import RewardServer, make_group

from core.buffer.ingest import IngestError, OfflineTokenizer, build_offline_groups, parse_offline_file
from core.buffer.redis_buffer import RedisBuffer
from core.config.buffer import BufferConfig
from core.tinymodels.tokenizer import build_tokenizer
from services.cli import main

ROOT = Path(__file__).resolve().parents[3]
TOKEN_IDS = {"prompt_token_ids": [1, 2], "completion_token_ids": [[3], [4]]}
TWO = {"prompt": "a", "completions": ["x", "y"]}


def in_namespace(namespace: str) -> list[str]:
    return ["--set", f"buffer.namespace={namespace}"]


def write_lines(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


@pytest.fixture
def tokenizer_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "tokenizer"
    build_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"tandem-ingest-{uuid.uuid4().hex[:8]}"
    yield name
    RedisBuffer(BufferConfig(kind="redis", namespace=name)).delete_all()


def redis_stats(namespace: str) -> dict:
    return RedisBuffer(BufferConfig(kind="redis", namespace=namespace)).stats().as_dict()


def test_ingest_through_the_real_entry_point_writes_offline_groups(
    tmp_path: Path, tokenizer_dir: Path, namespace: str
) -> None:
    data = write_lines(
        tmp_path / "old.jsonl",
        [
            {
                "prompt": "17+25=",
                "completions": ["42", "32"],
                "rewards": [1.0, 0.0],
                "reference": "42",
                "policy_version": 3,
            },
            {
                "prompt": "10+10=",
                "completions": ["20", "20", "2"],
                "rewards": [1, 1, 0],
                "source": "logs-2026",
            },
        ],
    )
    # The real entry point, in a process of its own.
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "ingest", str(data), "--buffer", "redis",
         "--tokenizer", str(tokenizer_dir), *in_namespace(namespace)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "2 off-policy groups written to redis" in result.stdout
    buffer = RedisBuffer(BufferConfig(kind="redis", namespace=namespace, on_policy_fraction=0.0))
    groups = buffer.sample(2, learner_version=3).groups
    by_prompt = {group.prompt: group for group in groups}
    eos = build_tokenizer().eos_token_id  # a completion that ended on its own ends with EOS, as an actor's
    assert list(by_prompt["17+25="].samples[1].completion_token_ids) == [ord("3"), ord("2"), eos]
    assert by_prompt["17+25="].policy_version == 3 and by_prompt["10+10="].source == "logs-2026"
    assert by_prompt["17+25="].samples[0].behaviour_logprobs is None  # unknown for offline data
    assert by_prompt["10+10="].rewards == [1.0, 1.0, 0.0]


def test_stats_prints_a_table_and_json(namespace: str, capsys: pytest.CaptureFixture[str]) -> None:

    buffer = RedisBuffer(BufferConfig(kind="redis", namespace=namespace, on_policy_fraction=1.0))
    buffer.set_learner_version(5)
    buffer.put([make_group("a", version=5), make_group("b", version=3), make_group("c", version=3)])
    buffer.sample(1, learner_version=5)
    buffer.close()
    args = [
        "buffer",
        "stats",
        "--redis-url",
        "redis://127.0.0.1:6379/0",
        "--set",
        f"buffer.namespace={namespace}",
    ]
    assert main(args) == 0
    table = capsys.readouterr().out
    for row in (
        "depth                3",
        "backlog              2",
        "pending              1",
        "learner_version      5",
    ):
        assert row in table
    assert "   0: 1" in table and "   2: 2" in table  # 5-5 once, 5-3 twice
    assert "put                  3" in table and "paused_signals       0" in table
    assert main([*args, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["staleness_histogram"] == {"0": 1, "2": 2} and stats["counters"]["sampled"] == 1


def test_a_malformed_line_is_named_and_nothing_is_written(
    tmp_path: Path, tokenizer_dir: Path, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_lines(
        tmp_path / "bad.jsonl",
        [
            {"prompt": "1+1=", "completions": ["2", "3"], "rewards": [1, 0]},
            {"prompt": "1+2=", "completions": ["3", "4"], "rewards": [1]},
        ],
    )
    code = main(
        [
            "ingest",
            str(data),
            "--buffer",
            "redis",
            "--tokenizer",
            str(tokenizer_dir),
            *in_namespace(namespace),
        ]
    )
    assert code == 2
    assert (
        "bad.jsonl:2: field 'rewards' must be a list with one number per completion"
        in capsys.readouterr().err
    )
    assert redis_stats(namespace)["offline_size"] == 0


def test_unscored_lines_go_to_the_reward_server_in_one_request(
    tmp_path: Path, namespace: str, reward_server: RewardServer
) -> None:
    ids = TOKEN_IDS  # no tokenizer needed
    data = write_lines(
        tmp_path / "unscored.jsonl",
        [
            {"prompt": "1+1=", "completions": ["2", "3"], "reference": "2", **ids},
            {"prompt": "2+2=", "completions": ["5", "4"], "reference": "4", **ids},
            {"prompt": "3+3=", "completions": ["6", "7"], "rewards": [0.5, 0.25], **ids},
        ],
    )
    code = main(
        [
            "ingest",
            str(data),
            "--buffer",
            "redis",
            "--reward-url",
            reward_server.url,
            *in_namespace(namespace),
        ]
    )
    assert code == 0
    assert reward_server.requests == [4]  # both unscored lines' completions, batched
    buffer = RedisBuffer(BufferConfig(kind="redis", namespace=namespace, on_policy_fraction=0.0))
    groups = {g.prompt: g for g in buffer.sample(3, learner_version=0).groups}
    assert groups["1+1="].rewards == [1.0, 0.0] and groups["2+2="].rewards == [0.0, 1.0]
    assert groups["3+3="].rewards == [0.5, 0.25]  # given rewards are kept, not re-scored
    assert groups["2+2="].reward_details == [{"exact_match": 0.0}, {"exact_match": 1.0}]
    assert list(groups["1+1="].samples[0].completion_token_ids) == [3]


def test_missing_rewards_without_a_reward_server_fail_clearly(
    tmp_path: Path, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_lines(
        tmp_path / "norewards.jsonl",
        [
            {"prompt": "1+1=", "completions": ["2", "3"], "rewards": [1, 0], **TOKEN_IDS},
            {"prompt": "1+2=", "completions": ["3", "4"], **TOKEN_IDS},
        ],
    )
    assert main(["ingest", str(data), "--buffer", "redis", *in_namespace(namespace)]) == 2
    assert "norewards.jsonl:2: field 'rewards' missing and no --reward-url" in capsys.readouterr().err
    assert redis_stats(namespace)["offline_size"] == 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "a", "completions": ["x"]}', "at least 2 strings"),
        ('{"prompt": "a", "completions": ["x", "y"], "rewards": [1, NaN]}', "finite numbers"),
        ('{"prompt": "a", "completions": ["x", "y"], "rewards": [1, true]}', "finite numbers"),
        ('{"prompt": "a", "completions": ["x", "y"], "reward": [1, 0]}', "unknown field(s) ['reward']"),
        ('{"prompt": "a", "completions": ["x", "y"], "policy_version": -1}', "policy_version"),
        ('{"prompt": "a", "completions": ["x", "y"], "reference": 42}', "field 'reference'"),
        ('{"prompt": "a", "completions": ["x", "y"], "prompt_token_ids": [1]}', "or neither"),
        (
            {**TWO, "prompt_token_ids": [1, "2"], "completion_token_ids": [[1], [2]]},
            "field 'prompt_token_ids' must be a list of non-negative integers",
        ),
        (
            {**TWO, "prompt_token_ids": [1], "completion_token_ids": [[1]]},
            "field 'completion_token_ids' must be one non-empty list",
        ),
        ({**TWO, **TOKEN_IDS, "completion_token_ids": [[1], []]}, "field 'completion_token_ids'"),
        ("not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_parse_errors_name_line_and_field(tmp_path: Path, line: str | dict, message: str) -> None:
    path = write_lines(
        tmp_path / "f.jsonl", ['{"prompt": "ok", "completions": ["1", "2"], "rewards": [0, 1]}', "", line]
    )
    with pytest.raises(IngestError) as error:
        parse_offline_file(path)
    assert "f.jsonl:3: " in str(error.value) and message in str(error.value)


def test_a_completion_the_reward_server_fails_fails_the_ingest(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "s.jsonl", [{"prompt": "1+1=", "completions": ["2", "3"], "reference": "2"}]
    )
    lines = parse_offline_file(path)

    def failing(items: list[dict]) -> list[dict]:
        return [{"status": "ok", "reward": 1.0}, {"status": "timeout", "reward": None, "error": "slow"}]

    with pytest.raises(IngestError, match=r"s\.jsonl:1: the reward server failed completion 1: timeout slow"):
        build_offline_groups(lines, OfflineTokenizer(build_tokenizer()), failing)
    with pytest.raises(
        IngestError, match=r"s\.jsonl:1: no 'prompt_token_ids' in the line and no --tokenizer"
    ):
        build_offline_groups(lines, None, failing)
