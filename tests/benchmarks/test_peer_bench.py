"""`tandem bench peer` without running TRL: the settings mapping, the copied reward rule, the clocks,
the figures, and the report block written from recorded timelines (other sections left alone)."""

import asyncio
import importlib.util
import json
from pathlib import Path
from types import ModuleType, SimpleNamespace

import peer_bench
import pytest

from core.config.loader import load_config
from core.config.reward import ExactMatchScorerConfig
from reward_server.scorers.base import ScoreItem
from reward_server.scorers.exact_match import ExactMatchScorer

from report import NOTES_BEGIN, NOTES_END, PEER_BEGIN, PEER_END, write_report

ROOT = Path(__file__).resolve().parents[2]


def trl_script() -> ModuleType:
    """benchmarks/peer/trl_rloo.py as a module (its top level imports the standard library only)."""
    spec = importlib.util.spec_from_file_location("trl_rloo", peer_bench.TRL_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_both_sides_get_the_issue_settings() -> None:
    settings = peer_bench.PeerSettings()
    trl = peer_bench.trl_arguments(settings, Path("/tmp/out"))
    assert trl["num_generations"] == 4 and trl["beta"] == 0.05 and trl["learning_rate"] == 1e-4
    assert trl["max_steps"] == 200 and trl["max_completion_length"] == 8 and trl["temperature"] == 1.0
    # TRL counts completions: a step is 16 groups of 4, a generation 2 steps' worth = 32 prompts.
    assert trl["per_device_train_batch_size"] == 64 and trl["gradient_accumulation_steps"] == 1
    per_step_prompts = trl["per_device_train_batch_size"] // trl["num_generations"]
    assert per_step_prompts == 16 and per_step_prompts * trl["steps_per_generation"] == 32
    assert trl["bf16"] is False and trl["use_cpu"] is True and trl["activation_checkpointing"] is False
    assert trl["lr_scheduler_type"] == "constant" and not any(key.startswith("script:") for key in trl)

    config = load_config(ROOT / "configs" / "demo.yaml", peer_bench.tandem_overrides(settings), environ={})
    assert config.algorithm.name == "rloo" and config.buffer.on_policy_fraction == 1.0
    assert config.algorithm.beta == 0.05 and config.learner.lr == 1e-4 and config.learner.max_steps == 200
    assert config.actors.n_samples == 4 and config.actors.prompts_per_batch == 32
    assert config.learner.batch_groups == 16 and config.learner.eval_every == 10
    assert config.actors.max_tokens == 8 and config.model.path == settings.model


def test_every_mapped_row_names_both_sides_or_says_why_not() -> None:
    for row in peer_bench.mapping(peer_bench.PeerSettings()):
        assert row.trl, row.setting
        assert row.tandem or row.note, row.setting


def test_the_script_reward_rule_is_tandems() -> None:
    rule = peer_bench.reward_rule()
    script = trl_script()
    pattern = __import__("re").compile(rule["pattern"])
    scorer = ExactMatchScorer(
        ExactMatchScorerConfig(
            name="exact_match",
            type="exact_match",
            pattern=rule["pattern"],
            numeric_tolerance=rule["tolerance"],
        )
    )
    cases = [
        ("42", "42"),
        (" 42 and more", "42"),
        ("-7", "-7"),
        ("7", "-7"),
        ("", "3"),
        ("x12", "12"),
        ("012", "12"),
    ]
    items = [ScoreItem(prompt="p", completion=c, reference=r) for c, r in cases]
    tandem = [result.score for result in asyncio.run(scorer.score(items))]
    copied = [script.exact_match(c, r, pattern, rule["tolerance"]) for c, r in cases]
    assert copied == tandem


def timeline(
    startup: float, step_s: float, steps: int, evals: dict[int, float]
) -> dict[str, list[list[float]]]:
    return {
        "steps": [[startup + step_s * (step - 1), step] for step in range(1, steps + 1)],
        "evals": [[startup + step_s * max(step - 1, 0), step, reward] for step, reward in evals.items()],
    }


def test_figures_from_recorded_timelines() -> None:
    trl = timeline(6.0, 0.2, 100, {0: 0.2, 50: 0.9, 100: 0.95})
    tandem = timeline(40.0, 0.1, 100, {0: 0.2, 50: 0.96, 100: 0.97})
    summary = peer_bench.summarise(trl, tandem)
    assert summary["target_eval"] == 0.95
    sides = summary["sides"]
    assert sides["trl"]["startup_s"] == 6.0 and sides["tandem"]["startup_s"] == 40.0
    assert sides["trl"]["steady_steps_per_s"] == pytest.approx(5.0)
    assert sides["tandem"]["steady_steps_per_s"] == pytest.approx(10.0)
    assert summary["steps_per_s_ratio"] == pytest.approx(2.0)
    # TRL reaches 0.95 at step 100 (6 + 19.8 s); Tandem's 0.96 at step 50 (40 + 4.9 s).
    assert sides["trl"]["time_to_target_s"] == pytest.approx(25.8)
    assert sides["tandem"]["time_to_target_s"] == pytest.approx(44.9)
    assert summary["time_to_target_ratio"] == pytest.approx(25.8 / 44.9)


def test_a_target_never_reached_is_reported_as_such() -> None:
    trl = timeline(6.0, 0.2, 10, {0: 0.2, 10: 0.95})
    tandem = timeline(40.0, 0.1, 10, {0: 0.2, 10: 0.5})
    summary = peer_bench.summarise(trl, tandem)
    assert summary["sides"]["tandem"]["time_to_target_s"] is None and summary["time_to_target_ratio"] is None


def test_run_files_are_put_on_the_launch_clock(tmp_path: Path) -> None:
    launched = 1000.0
    run = tmp_path / "run"
    run.mkdir()
    # The recorder started 30 s after the launch: its event at elapsed 5 s happened at epoch 1035.
    (run / "events.jsonl").write_text(
        json.dumps({"time": 1035.0, "elapsed_s": 5.0, "event": "actor_ready"}) + "\n"
    )
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "elapsed_s": 10.0}) + "\n")
    (run / "eval.jsonl").write_text(json.dumps({"step": 0, "elapsed_s": 8.0, "eval_reward_mean": 0.2}) + "\n")
    found = peer_bench.read_tandem_run(run, launched)
    assert found["steps"] == [[40.0, 1]] and found["evals"] == [[38.0, 0, 0.2]]

    log = tmp_path / "trl.jsonl"
    rows = [
        {"event": "start", "time": 1001.0},
        {"event": "eval", "time": 1004.0, "step": 0, "eval_reward_mean": 0.1, "eval_items": 200},
        {"event": "step", "time": 1006.5, "step": 1},
    ]
    log.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert peer_bench.read_trl_log(log, launched) == {"steps": [[6.5, 1]], "evals": [[4.0, 0, 0.1]]}


def recorded_raw() -> dict:
    settings = peer_bench.PeerSettings()
    trl = timeline(6.0, 0.2, 200, {0: 0.2, 100: 0.9, 200: 0.95})
    tandem = timeline(40.0, 0.1, 200, {0: 0.2, 100: 0.96, 200: 0.97})
    return {
        "generated": "2026-12-07 07:00 UTC",
        "quick": False,
        "total_seconds": 200.0,
        "machine": {"cores": 2, "versions": {"torch": "2.13.0+cpu", "vllm": "0.32.0"}},
        "load_before": [1.0, 1.0, 1.0],
        "load_after": [1.5, 1.0, 1.0],
        "versions": {"trl": "1.16.0", "transformers": "5.25.0", "torch": "2.13.0+cpu"},
        "settings": {"model": str(settings.model), "steps": settings.steps},
        "mapping": [vars(row) for row in peer_bench.mapping(settings)],
        "summary": peer_bench.summarise(trl, tandem),
        "trl": trl,
        "tandem": tandem,
    }


def test_the_peer_block_replaces_only_itself_and_survives_a_suite_report(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    out.write_text(f"# Benchmarks\n\n## e2e: old section\n\nkept\n\n{NOTES_BEGIN}\nmy notes\n{NOTES_END}\n")
    written = peer_bench.write_outputs(recorded_raw(), out)
    assert all(path.is_file() for path in written)
    text = out.read_text()
    assert "## e2e: old section" in text and "my notes" in text
    assert text.index(PEER_END) < text.index(NOTES_BEGIN)
    assert "## peer: TRL RLOOTrainer vs tandem train" in text and "TRL ÷ Tandem" in text
    assert "`num_generations=4`" in text and "`actors.n_samples=4`" in text and "peer_curves.png" in text
    assert json.loads((tmp_path / "benchmarks-peer.json").read_text())["summary"]["target_eval"] == 0.95
    assert "versions behind the learner" in text or "staleness not recorded" in text

    peer_bench.write_outputs(recorded_raw(), out)  # again: one block, not two
    assert out.read_text().count(PEER_BEGIN) == 1

    machine = {
        "cpu": "c", "cores": 2, "memory_gib": 1, "gpu": None, "os": "o", "python": "3.11",
        "versions": {}, "load_average": [0.0, 0.0, 0.0], "git_commit": None,
    }  # fmt: skip
    outcome = SimpleNamespace(name="buffer", result=None, seconds=1.0, log=tmp_path / "x.log", error="boom")
    outcome.load_before = outcome.load_after = None
    write_report([outcome], machine, out, quick=True, total_seconds=1.0)
    regenerated = out.read_text()
    assert "## peer: TRL RLOOTrainer vs tandem train" in regenerated and "my notes" in regenerated
    assert "## e2e: old section" not in regenerated  # the suite's own sections are its to rewrite


def test_staleness_is_summed_over_steps_and_given_as_shares() -> None:
    tandem = {"staleness": {"0": 30, "1": 10}}
    assert peer_bench.staleness_text(tandem) == "75 % at 0, 25 % at 1 versions behind the learner"
    assert peer_bench.staleness_text({}) == "staleness not recorded"
