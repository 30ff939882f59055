"""The e2e benchmark's split layout and its waits timeline, from recorded run files (no training)."""

import json
from pathlib import Path
from types import SimpleNamespace

import e2e_bench
import pytest

import report
import suite


def test_the_split_layout_pins_actors_and_learner_to_a_cpu_each() -> None:
    assert e2e_bench.layout_overrides("shared") == ["actors.cpu_affinity=null", "learner.cpu_affinity=null"]
    assert e2e_bench.layout_overrides("split", available=[3, 1, 2]) == [
        "actors.cpu_affinity=[1]",
        "learner.cpu_affinity=[2]",
    ]
    with pytest.raises(RuntimeError, match="two CPUs"):
        e2e_bench.layout_overrides("split", available=[0])
    with pytest.raises(ValueError, match="unknown layout"):
        e2e_bench.layout_overrides("diagonal")


def test_the_suite_runs_the_split_layout_through_its_own_entry() -> None:
    target, _ = suite.BENCHMARKS["e2e-split"]
    module, _, function = target.partition(":")
    assert (module, function) == ("e2e_bench", "run_split") and callable(e2e_bench.run_split)


def write_run(run_dir: Path, mode: str) -> None:
    """A recorded run: 1 s steps from 20 s on; async never waits, sync waits 0.6 s of each."""
    run_dir.mkdir(parents=True)
    wait = 0.0 if mode == "async" else 0.6
    rows = [
        {"step": step, "elapsed_s": 20.0 + step, "sample_wait_s": wait, "iteration_time_s": 1.0}
        for step in range(1, 40)
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    evals = [{"step": 0, "elapsed_s": 15.0, "eval_reward_mean": 0.2, "eval_items": 200}]
    evals += [{"step": 30, "elapsed_s": 51.0, "eval_reward_mean": 0.8, "eval_items": 200}]
    (run_dir / "eval.jsonl").write_text("".join(json.dumps(row) + "\n" for row in evals))
    stats = [{"generate_seconds": 12.5, "pauses_backpressure": 4, "pauses_stale": 2, "batches": 20}]
    (run_dir / "actors.json").write_text(json.dumps(stats))
    (run_dir / "config.yaml").write_text("actors:\n  pause_s: 0.25\n")


def test_waits_are_read_from_the_run_files_and_summarised(tmp_path: Path) -> None:
    runs = {}
    for mode in e2e_bench.MODES:
        write_run(tmp_path / mode, mode)
        runs[mode] = e2e_bench.read_run(tmp_path / mode, budget_s=60.0) | {"wall_s": 70.0}
    assert runs["sync"]["actors"] == {"generate_s": 12.5, "pauses": 6, "paused_s": 1.5, "batches": 20}
    first = runs["sync"]["steps"][0]
    assert first == {"start": 20.0, "wait": 0.6, "work": pytest.approx(0.4)}

    summary = e2e_bench.summarise(runs, budget_s=60.0, windows=2)
    waits = summary["sync"]["waits"]
    steps_in_span = summary["sync"]["steps_in_span"]
    assert waits["learner_waited_s"] == pytest.approx(0.6 * steps_in_span)
    assert summary["async"]["waits"]["learner_waited_s"] == 0.0
    table = "\n".join(e2e_bench.timeline_rows(summary))
    assert "| sync |" in table and "1.5 s (6 pauses)" in table

    picture = e2e_bench.plot_timeline(summary, tmp_path / "timeline.png")
    assert picture.stat().st_size > 0
    result = e2e_bench.build_result(summary, minutes=1.0, windows=2, layout="split")
    assert result.name == "e2e-split" and "actors.cpu_affinity" in result.method
    assert result.comparisons[0].ours_label == "async"


def test_rows_without_timing_keys_count_as_work() -> None:
    assert e2e_bench.step_segments({"elapsed_s": 5.0, "step_time_s": 2.0}) == {
        "start": 3.0,
        "wait": 0.0,
        "work": 2.0,
    }


def test_table_and_picture_notes_go_into_the_report_as_they_are() -> None:
    notes = ["a note", "", "| a | b |", "![p](p.png)"]
    result = e2e_bench.BenchResult("e2e-split", "t", "m", [], notes=notes)
    outcome = SimpleNamespace(seconds=1.0, load_before=[0.5], load_after=[0.5])
    lines = report.render_section(outcome, result)
    assert lines[-4:] == ["- a note", "", "| a | b |", "![p](p.png)"]
