"""`reward_model` and `entailment` with the tiny models that `tandem make-model` builds (in conftest.py)."""

import asyncio
import json
import random
import shutil
import threading
from pathlib import Path

import pytest
from conftest import TinyClassifiers
from fastapi.testclient import TestClient
from reward_support import LOOPBACK, ROOT, reward_config

from core.config import load_config
from core.config.reward import EntailmentScorerConfig, RewardModelScorerConfig
from core.tinymodels.reward_model import wrong_answer
from core.tinymodels.tasks import make_problem
from reward_server.app import create_app
from reward_server.scorers.base import ScoreItem, ScorerResult
from reward_server.scorers.entailment import EntailmentScorer
from reward_server.scorers.reward_model import RewardModelScorer

pytestmark = pytest.mark.slow


def run(scorer: RewardModelScorer | EntailmentScorer, items: list[ScoreItem]) -> list[ScorerResult]:
    async def score() -> list[ScorerResult]:
        try:
            return await scorer.score(items)
        finally:
            await scorer.close()

    return asyncio.run(score())


def reward_scorer(path: Path, **options: object) -> RewardModelScorer:
    return RewardModelScorer(RewardModelScorerConfig(name="rm", path=path, **options))  # type: ignore[arg-type]


def test_make_model_reward_reports_held_out_pair_accuracy_of_at_least_90_percent(
    tiny_classifiers: TinyClassifiers,
) -> None:
    summary = tiny_classifiers.reward_summary
    assert summary["kind"] == "reward" and summary["held_out_pair_accuracy"] >= 0.9, summary
    assert f"held-out pair accuracy {summary['held_out_pair_accuracy']:.3f}" in summary["output"]
    report = json.loads((tiny_classifiers.reward_model / "tandem_model.json").read_text())
    assert report["held_out_pair_accuracy"] == summary["held_out_pair_accuracy"]


def test_the_reward_model_scorer_ranks_correct_sums_above_wrong_ones(
    tiny_classifiers: TinyClassifiers,
) -> None:
    rng = random.Random(123)  # fresh problems, not the build's held-out set
    problems = [make_problem("arithmetic", rng, index) for index in range(100)]
    items = [ScoreItem(p.prompt, answer) for p in problems for answer in (p.reference, wrong_answer(p, rng))]
    results = run(reward_scorer(tiny_classifiers.reward_model), items)
    assert {r.status for r in results} == {"ok"}
    rewards = [r.score for r in results]
    ranked = sum(good > bad for good, bad in zip(rewards[::2], rewards[1::2], strict=True))  # type: ignore[operator]
    assert ranked >= 90, f"correct answer ranked higher on {ranked}/100 pairs"


def test_reward_model_scores_do_not_depend_on_the_batch_size(tiny_classifiers: TinyClassifiers) -> None:
    items = [
        ScoreItem(f"{a}+{a}=", completion) for a in range(10, 16) for completion in (str(2 * a), "7", "")
    ]
    whole = run(reward_scorer(tiny_classifiers.reward_model, batch_size=64), items)
    in_threes = run(reward_scorer(tiny_classifiers.reward_model, batch_size=3), items)
    assert [r.score for r in in_threes] == pytest.approx([r.score for r in whole], abs=1e-5)


def test_long_inputs_are_cut_from_the_left_so_the_completion_is_kept(
    tiny_classifiers: TinyClassifiers,
) -> None:
    # One byte is one token: with max_length 8, "xxx...12+30=42" is scored as its last 8 characters.
    scorer = reward_scorer(tiny_classifiers.reward_model, max_length=8)
    long, short, cut = run(
        scorer,
        [ScoreItem("x" * 5000 + "12+30=", "42"), ScoreItem("12+30=", "42"), ScoreItem("2+30=", "42")],
    )
    assert long.status == "ok" and long.score == pytest.approx(short.score, abs=1e-5)
    assert cut.score != pytest.approx(short.score, abs=1e-3)  # so one character more or less would show


def test_the_forward_pass_runs_off_the_event_loop(tiny_classifiers: TinyClassifiers) -> None:
    scorer = reward_scorer(tiny_classifiers.reward_model)
    threads: list[str] = []
    forward = scorer.classifier.model.forward

    def recording_forward(*args: object, **kwargs: object) -> object:
        threads.append(threading.current_thread().name)
        return forward(*args, **kwargs)

    scorer.classifier.model.forward = recording_forward  # type: ignore[method-assign]
    run(scorer, [ScoreItem("1+1=", "2")])
    assert threads and all(name.startswith("classifier-") for name in threads)


def test_a_model_with_several_outputs_is_refused_as_a_reward_model(tiny_classifiers: TinyClassifiers) -> None:
    with pytest.raises(ValueError, match=r"needs exactly one output \(num_labels=1\), this one has 3"):
        reward_scorer(tiny_classifiers.nli_model)


def test_a_directory_without_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a Hugging Face model directory"):
        reward_scorer(tmp_path)


def entailment_scorer(path: Path, label: str = "entailment") -> EntailmentScorer:
    return EntailmentScorer(EntailmentScorerConfig(name="nli", path=path, entailment_label=label))


def test_make_model_nli_reports_its_held_out_accuracy(tiny_classifiers: TinyClassifiers) -> None:
    summary = tiny_classifiers.nli_summary
    assert summary["kind"] == "nli" and summary["held_out_accuracy"] >= 0.85, summary


def test_entailment_is_the_probability_that_the_reference_entails_the_completion(
    tiny_classifiers: TinyClassifiers,
) -> None:
    items = [
        ScoreItem("", "x=5", reference="x=5"),  # entailed
        ScoreItem("", "x=4", reference="x=5"),  # contradicted
        ScoreItem("", "q=5", reference="x=5"),  # unrelated (neutral)
        ScoreItem("", "x=5", reference=None),  # no premise: cannot be judged
    ]
    entailed, contradicted, neutral, missing = run(entailment_scorer(tiny_classifiers.nli_model), items)
    assert entailed.score > 0.5 > max(contradicted.score, neutral.score)  # type: ignore[operator]
    assert all(0.0 <= r.score <= 1.0 for r in (entailed, contradicted, neutral))  # type: ignore[operator]
    assert missing == ScorerResult.failed("the item has no reference (the premise)")


def test_the_entailment_class_is_found_through_id2label(
    tiny_classifiers: TinyClassifiers, tmp_path: Path
) -> None:
    # Same weights, labels renamed: class 1 (neutral) is now called "ENTAILS". The scorer must follow
    # the name, so it now reports what was the neutral probability.
    relabelled = tmp_path / "relabelled"
    shutil.copytree(tiny_classifiers.nli_model, relabelled)
    config = json.loads((relabelled / "config.json").read_text())
    config["id2label"] = {"0": "yes", "1": "ENTAILS", "2": "no"}
    config["label2id"] = {"yes": 0, "ENTAILS": 1, "no": 2}
    (relabelled / "config.json").write_text(json.dumps(config))
    items = [ScoreItem("", "q=5", reference="x=5")]
    (neutral,) = run(entailment_scorer(tiny_classifiers.nli_model, label="neutral"), items)
    (renamed,) = run(entailment_scorer(relabelled, label="entails"), items)
    assert renamed.score == pytest.approx(neutral.score, abs=1e-6)
    with pytest.raises(
        ValueError, match=r"no label 'entailment' in the model's id2label .*set entailment_label"
    ):
        entailment_scorer(relabelled)


def test_both_model_scorers_in_one_server(tiny_classifiers: TinyClassifiers) -> None:
    config = reward_config(
        RewardModelScorerConfig(name="rm", path=tiny_classifiers.reward_model, weight=0.5),
        EntailmentScorerConfig(name="nli", path=tiny_classifiers.nli_model, weight=2.0),
    )
    with TestClient(create_app(config), base_url=LOOPBACK) as client:
        items = [
            {"prompt": "1+1=", "completion": "x=5", "reference": "x=5"},
            {"prompt": "1+1=", "completion": "2"},
        ]
        first, second = client.post("/v1/score", json={"items": items}).json()["results"]
    assert first["status"] == "ok"
    assert first["reward"] == pytest.approx(0.5 * first["scores"]["rm"] + 2.0 * first["scores"]["nli"])
    assert second["status"] == "error" and second["error"] == "nli: the item has no reference (the premise)"
    assert set(second["scores"]) == {"rm"}


def test_the_example_config_serves_with_the_built_reward_model(tiny_classifiers: TinyClassifiers) -> None:
    # configs/reward_server.yaml points at models/tiny-reward; here at the model this session built.
    override = f"reward.scorers.1.path={tiny_classifiers.reward_model}"
    config = load_config(ROOT / "configs" / "reward_server.yaml", [override], environ={}).reward
    assert [(s.name, s.type, s.weight) for s in config.scorers] == [
        ("exact_match", "exact_match", 1.0),
        ("reward_model", "reward_model", 0.1),
    ]
    with TestClient(create_app(config), base_url=LOOPBACK) as client:
        items = [{"prompt": "17+25=", "completion": answer, "reference": "42"} for answer in ("42", "32")]
        right, wrong = client.post("/v1/score", json={"items": items}).json()["results"]
    assert right["scores"]["exact_match"] == 1.0 and wrong["scores"]["exact_match"] == 0.0
    # The weighted sum, whatever this build's reward model scores (its ranking is tested on 100 pairs).
    assert right["reward"] == pytest.approx(1.0 + 0.1 * right["scores"]["reward_model"])
    assert wrong["reward"] == pytest.approx(0.0 + 0.1 * wrong["scores"]["reward_model"])
