"""The benchmark suite's plumbing: ratios and targets, alternation, the report, and a quick smoke run.

Benchmarks are not tests: nothing here asserts on a measured figure, only that the suite runs, each
benchmark reports a ratio per repetition, and the report and JSON are written.
"""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import BenchResult, Comparison, alternate, machine_description
from report import NOTES_BEGIN, NOTES_END, write_report

ROOT = Path(__file__).resolve().parents[2]


def comparison(ours: list[float], baseline: list[float], **fields: object) -> Comparison:
    return Comparison("x/s", "x/s", "ours", "base", ours, baseline, **fields)  # type: ignore[arg-type]


def test_ratio_is_paired_by_repetition_with_median_and_spread() -> None:
    # repetitions: 8/10 = 0.8, 9/10 = 0.9, 12/10 = 1.2 -> median 0.9, spread 0.8-1.2
    found = comparison([8.0, 9.0, 12.0], [10.0, 10.0, 10.0], target=0.9)
    assert found.ratios() == pytest.approx([0.8, 0.9, 1.2])
    assert (found.ratio().median, found.ratio().low, found.ratio().high) == pytest.approx((0.9, 0.8, 1.2))
    assert found.met() is True


def test_a_time_target_is_a_maximum() -> None:
    # seconds: 4 s against a 1 s copy is 4x, over a "within 3x" target
    assert comparison([4.0], [1.0], target=3.0, lower_is_better=True).met() is False
    assert comparison([2.0], [1.0], target=3.0, lower_is_better=True).met() is True
    assert comparison([2.0], [1.0]).met() is None


def test_unequal_series_are_refused() -> None:
    with pytest.raises(ValueError, match="values"):
        comparison([1.0, 2.0], [1.0])


def test_alternate_swaps_the_order_every_repetition() -> None:
    calls: list[str] = []
    sides = {name: (lambda name=name: calls.append(name) or 1.0) for name in ("a", "b")}
    values = alternate(sides, repeats=3, warmup=False)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert values == {"a": [1.0, 1.0, 1.0], "b": [1.0, 1.0, 1.0]}


def test_result_survives_json() -> None:
    result = BenchResult("n", "t", "m", [comparison([1.0, 2.0], [2.0, 2.0], target=0.9, miss_note="why")])
    again = BenchResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.comparisons[0].ratios() == [0.5, 1.0] and again.comparisons[0].miss_note == "why"


def test_report_lists_misses_with_their_note_and_keeps_the_hand_written_block(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    out.write_text(f"old\n{NOTES_BEGIN}\n## Profile\nbefore/after\n{NOTES_END}\n")
    missed = comparison([4.0, 5.0], [10.0, 10.0], target=0.8, miss_note="Because of X; Y would close it.")
    met = comparison([9.0, 10.0], [10.0, 10.0], target=0.8)
    outcomes = [
        SimpleNamespace(
            name="demo", result=BenchResult("demo", "t", "m", [missed, met]).to_dict(), seconds=1.0,
            error=None, load_before=[1.0, 1.0, 1.0], load_after=[1.0, 1.0, 1.0],
        ),
        SimpleNamespace(
            name="broken", result=None, seconds=2.0, error="exited with status 1: boom",
            load_before=None, load_after=None,
        ),
    ]  # fmt: skip
    write_report(outcomes, machine_description(), out, quick=True, total_seconds=3.0)
    text = out.read_text()
    assert "ratio 0.45, target >= 0.8. Because of X; Y would close it." in text
    assert "**broken** did not finish: exited with status 1: boom" in text
    assert "| **0.45** | 0.40-0.50 (n=2) | >= 0.8 | **no** |" in text
    assert "## Profile\nbefore/after" in text and "old" not in text.split(NOTES_BEGIN)[0]
    raw = json.loads(out.with_suffix(".json").read_text())
    assert raw["machine"]["cores"] >= 1 and [b["name"] for b in raw["benchmarks"]] == ["demo", "broken"]


def run_bench(tmp_path: Path, *names: str) -> dict:
    out = tmp_path / "docs" / "bench.md"
    command = [sys.executable, "-m", "services.cli", "bench", *names, "--quick"]
    command += ["--out", str(out), "--log-dir", str(tmp_path / "logs")]
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
    assert out.read_text().startswith("# Benchmarks")
    raw = json.loads(out.with_suffix(".json").read_text())
    assert [bench["name"] for bench in raw["benchmarks"]] == list(names)
    for bench in raw["benchmarks"]:
        assert bench["error"] is None and bench["result"]["quick"] is True
        for found in bench["result"]["comparisons"]:
            assert len(found["ratios"]) == len(found["ours"]) >= 1  # a ratio per repetition, any value
    return raw


def test_quick_suite_writes_report_and_json(tmp_path: Path) -> None:
    """The cheap benchmarks end to end through `tandem bench --quick` (needs the shared Redis)."""
    raw = run_bench(tmp_path, "reward", "buffer")
    assert "ratio" in raw["benchmarks"][1]["result"]["comparisons"][0]["summary"]


@pytest.mark.slow
def test_quick_weight_sync_runs_against_a_real_engine(tmp_path: Path) -> None:
    """1 M parameters only: publish + load into vLLM through the three transports, and the clone."""
    raw = run_bench(tmp_path, "weight-sync")
    names = [found["name"] for found in raw["benchmarks"][0]["result"]["comparisons"]]
    assert len(names) == 3 and all(name.startswith("publish + load, 1M") for name in names)
