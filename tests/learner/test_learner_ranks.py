"""Data-parallel learner: whole groups are assigned to ranks by tokens, and two CPU ranks (Ray actors,
gloo) take the same optimizer step as one rank on the same global batch, run the main loop, checkpoint
(each rank its ZeRO partition) and resume."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from learner_support import learner_config, sampled_groups
from transformers import AutoModelForCausalLM

from core.reference_model import ReferenceModel
from core.schemas import Sample, ScoredGroup, build_train_batch
from core.weight_sync.filesystem import published_versions
from learner import engine as ds
from learner.data_parallel import Ranks, Shard, assign_groups, order_for_ranks
from learner.step import train_step
from tests.ray_support import fresh_ray_init


def group(name: str, completion_tokens: int, samples: int = 2) -> ScoredGroup:
    sample = Sample(name, [1, 2], [3] * completion_tokens, "x", None, "stop", 0, "a")
    return ScoredGroup(
        name, "p", [1, 2], [sample] * samples, [0.0] * samples, ["ok"] * samples, [{}] * samples
    )


def test_groups_are_assigned_whole_and_balanced_by_tokens() -> None:
    groups = [group("a", 10), group("b", 2), group("c", 7), group("d", 3, samples=4), group("e", 1)]
    # tokens per group: a 24, b 8, c 18, d 20, e 6 -> largest first to the least loaded rank:
    # a->0 (24), d->1 (20), c->1 (38), b->0 (32), e->0 (38)
    assert assign_groups(groups, 2) == [[0, 1, 4], [2, 3]]
    assert assign_groups(groups, 1) == [[0, 1, 2, 3, 4]]
    assert assign_groups(groups[:1], 3) == [[0], [], []]  # more ranks than groups: some get none

    ordered, shard = order_for_ranks(groups, Ranks(rank=1, world=2))
    assert [g.group_id for g in ordered] == ["a", "b", "e", "c", "d"]
    assert shard.row_counts == (6, 6)  # rows = samples: a 2 + b 2 + e 2 | c 2 + d 4
    assert shard.rows().tolist() == [6, 7, 8, 9, 10, 11]
    assert Shard.whole(4).rows().tolist() == [0, 1, 2, 3]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A Ray of two CPUs for this module only (other modules start their own)."""
    import ray

    fresh_ray_init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="tandem-learner-tests")
    yield
    ray.shutdown()


@pytest.mark.slow
def test_two_ranks_take_the_same_step_as_one_then_run_checkpoint_and_resume(
    tiny_arith_model: Path, tmp_path: Path, ray_cluster: None
) -> None:
    from core.buffer.remote import RemoteBuffer
    from learner.ranks import LearnerRanks

    batch_groups = sampled_groups(tiny_arith_model, prompts=5, seed=3)  # 3 groups on one rank, 2 on the other
    config = learner_config(
        tiny_arith_model, tmp_path / "run", "learner.num_ranks=2", "learner.rank_cpus=1",
        "learner.micro_batch_tokens=40", "learner.batch_groups=2", "learner.max_steps=4",
        "learner.checkpoint_every=100", "algorithm.name=copg", "weight_sync.transport=filesystem",
        f"weight_sync.directory={tmp_path / 'weights'}", f"buffer.namespace=ranks-{uuid.uuid4().hex[:8]}",
    )  # fmt: skip

    # One rank, in this process, the whole batch in one micro-batch.
    model = AutoModelForCausalLM.from_pretrained(tiny_arith_model, dtype=torch.float32)
    initial = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    single = ds.create_engine(model, config.learner)
    batch = build_train_batch(batch_groups, pad_token_id=257)
    expected = train_step(single, ReferenceModel(tiny_arith_model), batch, config.algorithm, 100_000, lr=1e-3)

    # Two ranks, each its own groups in 40-token micro-batches: 2 on one rank, 3 on the other.
    buffer = RemoteBuffer.start(config.buffer)
    buffer.put(sampled_groups(tiny_arith_model, prompts=4, seed=4))
    records: list[dict] = []
    ranks = LearnerRanks(config, sink=records.append)
    try:
        metrics = ranks.train_on(batch_groups)
        assert metrics["ranks"] == 2 and metrics["micro_batches"] == 3  # the ranks keep in step
        assert metrics["loss"] == pytest.approx(expected["loss"], rel=1e-9)  # the global loss on each rank
        assert metrics["grad_norm"] == pytest.approx(expected["grad_norm"], rel=1e-5)
        one, two, other_rank = single.module.state_dict(), ranks.weights(0), ranks.weights(1)
        difference = max((one[name] - two[name]).abs().max().item() for name in one)
        moved = max((one[name] - initial[name]).abs().max().item() for name in one)
        print(f"max parameter difference, 1 rank vs 2 ranks: {difference:.2e} (largest update {moved:.2e})")
        assert moved > 1e-4 and difference < 1e-5
        assert all(torch.equal(two[name], other_rank[name]) for name in two)  # the ranks agree exactly

        # One group for two ranks: rank 1 has no rows and keeps in step with passes that add nothing.
        alone = ranks.train_on(batch_groups[:1])
        assert alone["num_groups"] == 1 and alone["ranks"] == 2
        two, other_rank = ranks.weights(0), ranks.weights(1)
        assert all(torch.equal(two[name], other_rank[name]) for name in two)

        # The main loop on both ranks: rank 0 samples from the shared buffer, acks, publishes, reports.
        state = ranks.run()
        two = ranks.weights(0)
    finally:
        ranks.shutdown()
    # Steps 1 and 2 were `train_on`; the loop took steps 3 and 4 and published v1 and v2.
    assert (state.step, state.policy_version) == (4, 2)
    assert published_versions(tmp_path / "weights") == [1, 2]
    stats = buffer.stats()
    assert (stats.backlog, stats.pending, stats.counters["acked"]) == (0, 0, 4)
    assert [r["step"] for r in records] == [3, 4] and all(r["ranks"] == 2 for r in records)
    assert [r["staleness_histogram"] for r in records] == [{0: 2}, {1: 2}]
    checkpoint = config.run.run_dir / "checkpoints" / "step-00000004"
    partitions = sorted(p.name for p in checkpoint.glob("*optim_states.pt"))
    assert len(partitions) == 2, partitions  # each rank wrote its ZeRO-2 optimizer partition
    assert (checkpoint / "hf" / "model.safetensors").is_file()
    assert (checkpoint / "tandem_state.json").is_file()

    # Two new ranks resume from it: each loads its own partition; weights and Adam's step count return.
    resumed: list[dict] = []
    again = LearnerRanks(config, sink=resumed.append, resume=True)
    try:
        assert (again.state.step, again.state.policy_version) == (4, 3)  # the restored weights went out as v3
        for rank in (0, 1):
            loaded = again.weights(rank)
            assert all(torch.equal(loaded[name], two[name]) for name in two), rank
    finally:
        again.shutdown()
    stamp = {"step": 4, "policy_version": 2}
    assert resumed == [
        {"event": "resumed", "checkpoint": str(checkpoint), "optimizer_steps": 4, "reacked": 0} | stamp,
        {"event": "republished", "version": 3, "lost_versions": 0} | stamp,
    ]
