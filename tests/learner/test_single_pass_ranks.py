"""Single-pass micro-batches across data-parallel ranks: two gloo ranks (processes), each back-propagating
`world *` its own groups' shares, average to the full-batch gradient (as DeepSpeed averages them), keep
the same number of backward passes (a rank with fewer micro-batches adds idle ones), and report the
whole batch's loss. The engine is the gradient recorder of test_single_pass_microbatch (no DeepSpeed)."""

import os
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_single_pass_microbatch import (
    BETA,
    PAD,
    TOLERANCE,
    VALUE_TOLERANCE,
    Case,
    FixedReference,
    RecordingEngine,
    full_batch_loss,
    gradient,
    mixed_groups,
    tiny_policy,
)

from core.config.learner import AlgorithmConfig
from core.schemas import build_train_batch
from learner.data_parallel import Ranks, order_for_ranks
from learner.step import plan_step

WORLD = 2
BUDGET = 120  # tokens: here one rank's groups make 2 micro-batches and the other's 3


def reference_values(batch) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Reference log-probs that depend only on a row's tokens (so any row order gets the same ones)."""
    return -(batch.input_ids * batch.attention_mask).sum(dim=1).double() / 50


def rank_worker(rank: int, init_file: str, out: str) -> None:
    from learner import engine as ds
    from learner.step import train_step

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)

    def backward(engine: RecordingEngine, loss: torch.Tensor) -> None:
        engine.backwards += 1
        loss.backward()

    ds.begin_step = lambda engine, micro_batches, lr: engine.passes_announced.append(micro_batches)
    ds.backward = backward
    ds.grad_norm = lambda engine, measured=None: 1.0
    ordered, shard = order_for_ranks(mixed_groups(), Ranks(rank, WORLD))
    batch = build_train_batch(ordered, pad_token_id=PAD)
    engine = RecordingEngine(tiny_policy())
    algorithm = AlgorithmConfig(name="copg", beta=BETA)
    reference = FixedReference(reference_values(batch))
    metrics = train_step(engine, reference, batch, algorithm, BUDGET, 1e-3, shard)  # type: ignore[arg-type]
    total = gradient(engine.module)
    dist.all_reduce(total)  # DeepSpeed's average over the ranks
    torch.save(
        {"gradient": total / WORLD, "metrics": metrics, "backwards": engine.backwards},
        Path(out) / f"rank{rank}.pt",
    )  # fmt: skip
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_average_to_the_full_batch_gradient_in_a_single_pass(tmp_path: Path) -> None:
    init_file = tempfile.mktemp(dir=tmp_path)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    mp.spawn(rank_worker, args=(init_file, str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD)]

    ordered, shard = order_for_ranks(mixed_groups(), Ranks(0, WORLD))
    single, plans = plan_step(build_train_batch(ordered, pad_token_id=PAD), BUDGET, shard)
    assert single and len({len(plan) for plan in plans}) == 2  # the rank with fewer adds an idle pass

    model = tiny_policy()
    batch = build_train_batch(mixed_groups(), pad_token_id=PAD)
    case = Case(AlgorithmConfig(name="copg", beta=BETA))
    loss = full_batch_loss(model, batch, reference_values(batch), case)
    loss.backward()
    expected = gradient(model)
    for result in results:
        metrics = result["metrics"]
        assert metrics["single_pass"] == 1.0 and metrics["ranks"] == WORLD
        assert float((result["gradient"] - expected).abs().max() / expected.norm()) < TOLERANCE
        assert metrics["loss"] == pytest.approx(float(loss.detach()), rel=TOLERANCE, abs=VALUE_TOLERANCE)
        assert result["backwards"] == metrics["micro_batches"]  # the same number on every rank
    assert results[0]["metrics"]["num_samples"] == len(batch.rewards)  # the whole batch's metrics
