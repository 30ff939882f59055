"""`tandem train` end to end, shortened: real vLLM actor under Ray, embedded reward server over HTTP,
Ray-served memory buffer, DeepSpeed learner, the default weight transport (`auto`: `collective` on one
machine); then a resume of the same run. The offline mix runs the reference on the actor's side."""

import json
from pathlib import Path

import httpx
import pytest
import ray

from core.config import load_config
from services.embedded_server import free_port
from services.orchestration.run_files import read_jsonl

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]


def short_demo(run_dir: Path, model: Path, max_steps: int) -> list[str]:
    return [
        f"run.run_dir={run_dir}",
        "run.max_minutes=8",
        f"model.path={model}",
        f"actors.train_prompts={model / 'prompts' / 'train.jsonl'}",
        f"actors.eval_prompts={model / 'prompts' / 'eval.jsonl'}",
        "actors.prompts_per_batch=8",
        f"learner.max_steps={max_steps}",
        "learner.batch_groups=4",
        "learner.eval_every=2",
        "learner.checkpoint_every=2",
        "buffer.high_water=16",
        "logging.tensorboard=true",
    ]


def test_demo_config_trains_records_and_resumes(tiny_arith_model: Path, tmp_path: Path) -> None:
    from services.orchestration.driver import train

    run_dir = tmp_path / "run"
    port = free_port()
    overrides = [*short_demo(run_dir, tiny_arith_model, 4), f"logging.metrics_port={port}"]
    config = load_config(ROOT / "configs" / "demo.yaml", overrides)
    try:
        result = train(config, progress=False)
    finally:
        ray.shutdown()
    assert result.steps == 4 and result.stopped_by == "max_steps" and result.policy_version == 4

    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [row["step"] for row in metrics] == [1, 2, 3, 4]
    for row in metrics:
        for key in (
            "policy_version",
            "loss",
            "reward_mean",
            "kl",
            "on_policy_fraction",
            "tokens_per_s",
            "elapsed_s",
        ):
            assert key in row, key
    evals = read_jsonl(run_dir / "eval.jsonl")
    assert [row["step"] for row in evals] == [0, 2, 4]
    assert all(0.0 <= row["eval_reward_mean"] <= 1.0 and row["eval_failed"] == 0 for row in evals)
    assert evals[-1]["policy_version"] == 4  # the final eval ran on the final weights
    assert (run_dir / "reward_curve.png").stat().st_size > 10_000
    best = json.loads((run_dir / "best" / "best.json").read_text())
    checkpoint_evals = [row for row in evals if row["step"] in (2, 4)]
    assert best["eval_reward_mean"] == max(row["eval_reward_mean"] for row in checkpoint_evals)
    assert (run_dir / "best" / "config.json").is_file()
    assert (run_dir / "config.yaml").is_file() and list((run_dir / "tensorboard").iterdir())
    state = json.loads((run_dir / "checkpoints" / "step-00000004" / "tandem_state.json").read_text())
    assert state["step"] == 4 and state["policy_version"] == 4

    exposed = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert "tandem_learner_step 4.0" in exposed and "tandem_policy_version 4.0" in exposed
    assert 'tandem_buffer_groups{part="replay_size"}' in exposed

    with pytest.raises(FileExistsError, match="--resume"):
        train(config, progress=False)

    config = load_config(ROOT / "configs" / "demo.yaml", short_demo(run_dir, tiny_arith_model, 6))
    try:
        result = train(config, resume=True, progress=False)
    finally:
        ray.shutdown()
    assert result.steps == 6 and result.policy_version == 6
    assert [row["step"] for row in read_jsonl(run_dir / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    resumed_evals = read_jsonl(run_dir / "eval.jsonl")[len(evals) :]
    # Actors of the resumed run start from the restored weights, not the initial model's.
    assert resumed_evals and all(row["policy_version"] >= 4 for row in resumed_evals)
    events = read_jsonl(run_dir / "events.jsonl")
    assert any(event.get("event") == "resumed" and event["step"] == 4 for event in events)


def test_sync_mode_generates_then_trains_in_lock_step(tiny_arith_model: Path, tmp_path: Path) -> None:
    from services.orchestration.driver import train

    run_dir = tmp_path / "sync"
    # high_water = one round: rounds that piled up leftovers would make the actor pause mid-round.
    overrides = [*short_demo(run_dir, tiny_arith_model, 4), "run.mode=sync", "buffer.high_water=8"]
    try:
        result = train(load_config(ROOT / "configs" / "demo.yaml", overrides), progress=False)
    finally:
        ray.shutdown()
    assert result.steps == 4 and result.policy_version == 4
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    # A round makes 8 groups (one batch of prompts) and a step takes 4 (3 fresh + 1 replayed): the
    # first step trains on the round's fresh groups only; later rounds start only when the leftovers
    # are used up, so the actor never meets the high-water mark mid-round (it would wait forever).
    assert metrics[0]["staleness_histogram"] == {"0": 4}
    assert all(row["num_fresh"] >= 3 for row in metrics)
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("step-*"))
    assert checkpoints == ["step-00000002", "step-00000004"]  # every 2 steps, not after each step


def test_code_config_trains_with_sandboxed_unit_tests(tiny_code_model: Path, tmp_path: Path) -> None:
    from services.orchestration.driver import train

    run_dir = tmp_path / "code"
    overrides = [
        f"run.run_dir={run_dir}",
        f"model.path={tiny_code_model}",
        f"actors.train_prompts={tiny_code_model / 'prompts' / 'train.jsonl'}",
        f"actors.eval_prompts={tiny_code_model / 'prompts' / 'eval.jsonl'}",
        "actors.prompts_per_batch=8",
        "learner.max_steps=3",
        "learner.batch_groups=4",
        "learner.eval_every=3",
        "learner.checkpoint_every=3",
        "buffer.high_water=16",
    ]
    try:
        result = train(load_config(ROOT / "configs" / "code.yaml", overrides), progress=False)
    finally:
        ray.shutdown()
    assert result.steps == 3
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert all(0.0 <= row["reward_mean"] <= 1.0 for row in metrics)
    evals = read_jsonl(run_dir / "eval.jsonl")
    assert evals and all(row["eval_failed"] == 0 for row in evals)
    print(f"\ncode task: eval {[row['eval_reward_mean'] for row in evals]}")


def test_offline_mix_config_trains_on_offline_and_fresh_groups_with_redis(
    tiny_arith_model: Path, tmp_path: Path
) -> None:
    import redis

    from core.tinymodels.offline import write_offline_data
    from services.orchestration.driver import train

    offline = tmp_path / "offline.jsonl"
    lines = write_offline_data("arithmetic", tiny_arith_model / "prompts" / "train.jsonl", offline, limit=64)
    namespace = f"e2e-{tmp_path.name}"
    run_dir = tmp_path / "mix"
    overrides = [
        *short_demo(run_dir, tiny_arith_model, 4),
        f"buffer.namespace={namespace}",
        f"buffer.offline_files=[{offline}]",
        "model.reference_on=actors",  # the actor stamps its samples; offline rows are the learner's
    ]
    config = load_config(ROOT / "configs" / "offline-mix.yaml", overrides)
    try:
        train(config, progress=False)
    finally:
        ray.shutdown()
        client = redis.Redis.from_url(config.buffer.redis_url)
        stats_keys = list(client.scan_iter(f"{namespace}*"))
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [row["step"] for row in metrics] == [1, 2, 3, 4]
    assert sum(row["num_replayed"] for row in metrics) > 0 and sum(row["num_fresh"] for row in metrics) > 0
    # Fresh rows are first sightings: each came stamped by the actor's reference, through Redis.
    assert all(row["reference_from_actors"] > 0 for row in metrics if row["rows_fresh"])
    # The first step with offline rows meets them for the first time: those the learner computed.
    first_offline = next(row for row in metrics if row["rows_offline"])
    assert first_offline["reference_from_actors"] < 1
    assert stats_keys, "the run's groups live in Redis under its namespace"
    from core.buffer import open_buffer

    buffer = open_buffer(config.buffer)
    try:
        assert buffer.stats().offline_size == lines
    finally:
        buffer.close()
        if stats_keys:
            client.delete(*stats_keys)
