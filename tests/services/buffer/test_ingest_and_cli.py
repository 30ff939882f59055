"""`tandem ingest` and `tandem buffer stats` against the running Redis; all-or-nothing ingestion."""

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from services.buffer.ingest import IngestError, build_offline_groups, parse_offline_file
from services.buffer.redis_buffer import RedisBuffer
from services.config.buffer import BufferConfig
from services.tinymodels.tokenizer import build_tokenizer

ROOT = Path(__file__).resolve().parents[3]


def write_lines(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


@pytest.fixture
def tokenizer_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "tokenizer"
    build_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture
def namespace() -> str:
    name = f"tandem-ingest-{uuid.uuid4().hex[:8]}"
    yield name
    RedisBuffer(BufferConfig(kind="redis", namespace=name)).delete_all()


def tandem(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def test_ingest_writes_offline_groups_and_stats_shows_them(
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
    result = tandem(
        "ingest", str(data), "--tokenizer", str(tokenizer_dir), "--set", f"buffer.namespace={namespace}"
    )
    assert result.returncode == 0, result.stderr
    assert "2 off-policy groups written" in result.stdout
    buffer = RedisBuffer(BufferConfig(kind="redis", namespace=namespace, on_policy_fraction=0.0))
    groups = buffer.sample(2, learner_version=3).groups
    by_prompt = {group.prompt: group for group in groups}
    assert list(by_prompt["17+25="].samples[1].completion_token_ids) == [ord("3"), ord("2")]
    assert by_prompt["17+25="].policy_version == 3 and by_prompt["10+10="].source == "logs-2026"
    assert by_prompt["17+25="].samples[0].behaviour_logprobs is None  # unknown for offline data
    stats = tandem("buffer", "stats", "--json", "--set", f"buffer.namespace={namespace}")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["offline_size"] == 2


def test_a_malformed_line_is_named_and_nothing_is_written(
    tmp_path: Path, tokenizer_dir: Path, namespace: str
) -> None:
    data = write_lines(
        tmp_path / "bad.jsonl",
        [
            {"prompt": "1+1=", "completions": ["2", "3"], "rewards": [1, 0]},
            {"prompt": "1+2=", "completions": ["3", "4"], "rewards": [1]},
        ],
    )
    result = tandem(
        "ingest", str(data), "--tokenizer", str(tokenizer_dir), "--set", f"buffer.namespace={namespace}"
    )
    assert result.returncode != 0
    assert "bad.jsonl:2: field 'rewards' must be a list with one number per completion" in result.stderr
    assert RedisBuffer(BufferConfig(kind="redis", namespace=namespace)).stats().offline_size == 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "a", "completions": ["x"]}', "at least 2 strings"),
        ('{"prompt": "a", "completions": ["x", "y"], "rewards": [1, NaN]}', "finite numbers"),
        ('{"prompt": "a", "completions": ["x", "y"], "reward": [1, 0]}', "unknown field(s) ['reward']"),
        ('{"prompt": "a", "completions": ["x", "y"], "policy_version": -1}', "policy_version"),
        ("not json", "not valid JSON"),
    ],
)
def test_parse_errors_name_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    path = write_lines(
        tmp_path / "f.jsonl", ['{"prompt": "ok", "completions": ["1", "2"], "rewards": [0, 1]}', line]
    )
    with pytest.raises(IngestError) as error:
        parse_offline_file(path)
    assert "f.jsonl:2: " in str(error.value) and message in str(error.value)


def test_lines_without_rewards_are_scored_and_a_failed_item_fails_the_ingest(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "s.jsonl", [{"prompt": "1+1=", "completions": ["2", "3"], "reference": "2"}]
    )
    lines = parse_offline_file(path)
    tokenize = lambda text: [ord(c) for c in text]  # noqa: E731
    scored = build_offline_groups(
        path,
        lines,
        tokenize,
        lambda items: [
            {"status": "ok", "reward": float(i["completion"] == i["reference"]), "scores": {"em": 1.0}}
            for i in items
        ],
    )
    assert scored[0].rewards == [1.0, 0.0]

    def failing(items: list[dict]) -> list[dict]:
        return [{"status": "ok", "reward": 1.0}, {"status": "timeout", "reward": None, "error": "slow"}]

    with pytest.raises(IngestError, match=r"s\.jsonl:1: the reward server failed completion 1: timeout slow"):
        build_offline_groups(path, lines, tokenize, failing)
    with pytest.raises(IngestError, match="no --reward-url"):
        build_offline_groups(path, lines, tokenize, None)
