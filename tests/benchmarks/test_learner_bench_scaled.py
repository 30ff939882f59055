"""The learner benchmark's scaled mode (issue 21) on the CPU: a smoke run of the code path the GPU
check runs (tiny random Qwen2, both sides, breakdown, parity, markdown), and its pure pieces (defaults,
the bf16 peak table, the FLOPs formula), and the GPU check script (it parses; its dry run on the CPU
writes its report). Nothing here asserts on a measured speed."""

import json
import os
import subprocess
from pathlib import Path

import learner_bench
import pytest


def test_scaled_defaults_are_64_groups_of_4_samples_of_512_tokens() -> None:
    args = learner_bench.parse_args(["--model-size", "1.5b", "--device", "cpu"])
    assert (args.groups, args.samples, args.prompt_tokens + args.completion_tokens) == (64, 4, 512)
    assert args.micro_batch_tokens == 8192 and args.precision == "fp32"  # bf16 is the cuda default
    plain = learner_bench.parse_args([])
    assert (plain.groups, plain.prompt_tokens, plain.completion_tokens) == (16, 16, 32)  # the CPU mode's
    assert plain.micro_batch_tokens == 10**9 and plain.model_sizes == []
    # `--device` alone is the scaled mode at its sizes: both Qwen2.5 shapes on CUDA, the tiny one on a CPU.
    assert learner_bench.parse_args(["--device", "cuda"]).model_sizes == ["0.5b", "1.5b"]
    assert learner_bench.parse_args(["--device", "cpu"]).model_sizes == ["tiny"]


def test_bf16_peaks_by_device_name() -> None:
    peak = learner_bench.bf16_peak_flops
    assert peak("NVIDIA H100 80GB HBM3") == peak("NVIDIA H200") == 989e12
    assert peak("NVIDIA H100 PCIe") == 756e12 and peak("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak("NVIDIA GeForce RTX 4090") is None


def test_flops_per_token_is_six_per_parameter_plus_attention() -> None:
    assert learner_bench.training_flops_per_token(10, 2, 8, 4) == 6 * 10 + 12 * 2 * 8 * 4


@pytest.mark.parametrize("size", ["0.5b", "1.5b"])
def test_model_shapes_have_qwen25_parameter_counts(size: str) -> None:
    """Counted from the shapes without building the model: ~0.49 B and ~1.54 B (tied embeddings)."""
    s = learner_bench.MODEL_SHAPES[size]
    hidden, inter, layers, vocab = (
        s["hidden_size"],
        s["intermediate_size"],
        s["num_hidden_layers"],
        s["vocab_size"],
    )
    kv = hidden // s["num_attention_heads"] * s["num_key_value_heads"]
    attention = hidden * hidden * 2 + hidden * kv * 2 + hidden + 2 * kv  # q, o, k, v and the q/k/v biases
    per_layer = attention + 3 * hidden * inter + 2 * hidden
    total = vocab * hidden + layers * per_layer + hidden
    expected = {"0.5b": 0.494e9, "1.5b": 1.544e9}[size]
    assert total == pytest.approx(expected, rel=0.01)


def test_a_cpu_smoke_run_of_the_scaled_mode(tmp_path: Path) -> None:
    args = learner_bench.parse_args([
        "--device", "cpu", "--model-size", "tiny", "--groups", "4", "--prompt-tokens", "8",
        "--completion-tokens", "24", "--steps", "1", "--warmup", "0", "--micro-batch-tokens", "256",
        "--parity",
    ])  # fmt: skip
    result = learner_bench.scaled(args)
    ours, raw = result["ours"], result["raw"]
    assert ours["single_pass"] == 1.0 and ours["micro_batches"] == 2  # 2 groups of 128 tokens each
    for side in (ours, raw):
        assert len(side["tokens_per_s"]) == 1 and side["median_tokens_per_s"] > 0
        assert side["mfu"] is None and side["peak_memory_bytes"] is None  # no GPU peak or memory here
        assert set(side["breakdown_s"]) == {"forward", "backward", "optimizer", "total"}
        assert all(seconds > 0 for seconds in side["breakdown_s"].values())
    assert result["parity"]["passed"], result["parity"]
    text = learner_bench.scaled_markdown(result)
    assert "| Tandem train_step (DeepSpeed) |" in text and "Parity vs CPU float32" in text
    json.dumps(result, default=str)  # what --json writes


def test_the_tandem_side_runs_the_two_pass_path_when_a_group_exceeds_the_budget() -> None:
    """A budget below one group's padded size (4 x 32 tokens): Tandem takes its two-pass path."""
    args = learner_bench.parse_args([
        "--device", "cpu", "--model-size", "tiny", "--groups", "2", "--prompt-tokens", "8",
        "--completion-tokens", "24", "--steps", "1", "--warmup", "0", "--micro-batch-tokens", "64",
    ])  # fmt: skip
    side = learner_bench.tandem_side(args, learner_bench.torch.device("cpu"))
    assert side["single_pass"] == 0.0 and side["micro_batches"] == 4  # 2 rows of 32 tokens each


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script", ["gpu_check.sh", "build_gpu_wheels.sh"])
def test_the_gpu_scripts_parse(script: str) -> None:
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / script)], check=True)


@pytest.mark.slow
def test_the_gpu_check_dry_run_writes_its_report(tmp_path: Path) -> None:
    """`gpu_check.sh --cpu`: the same script, the tiny model on the CPU, the report in $OUT."""
    environ = {k: v for k, v in os.environ.items() if k != "PYTHON"} | {"OUT": str(tmp_path)}
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu"],
        env=environ, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = (tmp_path / "gpu.md").read_text()
    assert "dry run on the CPU" in report and "- runs: tiny-cpu: ok" in report
    assert (
        "| Tandem train_step (DeepSpeed) |" in report
        and "Parity vs CPU float32 (tiny model): passed" in report
    )
