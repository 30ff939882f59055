"""The DeepSpeed learner on the tiny model: a step per algorithm moves the weights down the loss gradient,
token-budget micro-batches give the full-batch update, log-probs are those of a plain forward pass,
and bad groups (empty completion, group of one, non-finite reward) are skipped or stop the run."""

import math
from dataclasses import replace
from pathlib import Path

import msgspec
import pytest
import torch
from learner_support import learner_config, sampled_groups
from transformers import AutoModelForCausalLM

from core.logprobs import completion_logprobs, token_logprobs
from core.reference_model import ReferenceModel
from core.schemas import SchemaError, ScoredGroup, build_train_batch
from learner import engine as ds
from learner.algorithms import LOSSES
from learner.step import BadDataError, plan_micro_batches, row_keys, screen_groups, train_step

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def groups(tiny_arith_model: Path) -> list[ScoredGroup]:
    return sampled_groups(tiny_arith_model)


def fresh_engine(model_dir: Path, config) -> object:  # type: ignore[no-untyped-def]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return ds.create_engine(model, config.learner)


def test_token_logprobs_match_a_manual_forward(tiny_arith_model: Path, groups: list[ScoredGroup]) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_arith_model, dtype=torch.float32)
    batch = build_train_batch(groups[:2], pad_token_id=257)
    per_token = token_logprobs(model, batch.input_ids, batch.attention_mask)
    row = 0
    length = int(batch.attention_mask[row].sum())
    logits = model(batch.input_ids[row : row + 1, :length]).logits[0].float()
    manual = torch.log_softmax(logits[:-1], -1).gather(1, batch.input_ids[row, 1:length, None])[:, 0]
    assert torch.allclose(per_token[row, 1:length], manual, atol=1e-5)
    summed = completion_logprobs(model, batch.input_ids, batch.attention_mask, batch.completion_mask)
    assert summed[row].item() == pytest.approx(
        manual[batch.completion_mask[row, 1:length]].sum().item(), abs=1e-4
    )


@pytest.mark.parametrize("algorithm", ["copg", "rloo", "agro"])
def test_one_step_moves_the_weights_down_the_loss_gradient(
    tiny_arith_model: Path, groups: list[ScoredGroup], tmp_path: Path, algorithm: str
) -> None:
    """What holds for any model the build can produce: the step's update has a positive inner product
    with the negative gradient of the loss at the starting weights, and that gradient is a descent
    direction (a small enough plain-SGD step along it lowers the loss). Whether one AdamW step of a
    fixed size lowers a policy-gradient surrogate depends on the model's curvature, so it is not asked."""
    config = learner_config(tiny_arith_model, tmp_path, f"algorithm.name={algorithm}", "algorithm.beta=0.1")
    engine = fresh_engine(tiny_arith_model, config)
    reference = ReferenceModel(tiny_arith_model)
    batch = build_train_batch(groups, pad_token_id=257)
    ref = reference.logprobs(batch, row_keys(batch)).double()

    plain = AutoModelForCausalLM.from_pretrained(tiny_arith_model, dtype=torch.float32)

    def surrogate(model: torch.nn.Module) -> torch.Tensor:
        logp = completion_logprobs(model, batch.input_ids, batch.attention_mask, batch.completion_mask)
        return LOSSES[algorithm](logp.double(), ref, batch.rewards, batch.group_index, 0.1).loss

    surrogate(plain).backward()
    gradient = [p.grad.detach().clone() for p in plain.parameters()]
    start = [p.detach().clone() for p in engine.module.parameters()]
    metrics = train_step(engine, reference, batch, config.algorithm, token_budget=100_000, lr=1e-3)
    update = [p.detach() - s for p, s in zip(engine.module.parameters(), start, strict=True)]
    alignment = sum(float((u * -g).sum()) for u, g in zip(update, gradient, strict=True))
    norm = math.sqrt(sum(float(g.pow(2).sum()) for g in gradient))
    print(f"{algorithm}: <update, -grad> = {alignment:.3e}, |grad| = {norm:.3e}")
    assert norm > 0 and alignment > 0

    # The gradient itself is right: along it, the loss falls for some small step (first order).
    with torch.no_grad():
        before = surrogate(plain).item()
        fell = []
        for eta in (1e-2, 1e-3, 1e-4, 1e-5):
            for p, g in zip(plain.parameters(), gradient, strict=True):
                p.sub_(eta / norm * g)
            fell.append(surrogate(plain).item() < before)
            for p, g in zip(plain.parameters(), gradient, strict=True):
                p.add_(eta / norm * g)
    assert any(fell), f"no step along -grad lowered the loss from {before}"

    assert metrics["micro_batches"] == 1 and metrics["tokens"] == batch.num_tokens
    rows = len(row_keys(batch))
    assert (reference.misses, reference.hits) == (rows, rows)  # the step's lookup hit the cache
    reference.logprobs(batch, row_keys(batch))
    assert (reference.misses, reference.hits) == (rows, 2 * rows)  # cached per sample


def test_micro_batches_give_the_full_batch_update(
    tiny_arith_model: Path, groups: list[ScoredGroup], tmp_path: Path
) -> None:
    config = learner_config(tiny_arith_model, tmp_path, "algorithm.name=copg")
    batch = build_train_batch(groups, pad_token_id=257)
    assert len(plan_micro_batches(batch, token_budget=60)) >= 3
    whole, split = fresh_engine(tiny_arith_model, config), fresh_engine(tiny_arith_model, config)
    reference = ReferenceModel(tiny_arith_model)
    train_step(whole, reference, batch, config.algorithm, token_budget=100_000, lr=1e-3)
    metrics = train_step(split, reference, batch, config.algorithm, token_budget=60, lr=1e-3)
    assert metrics["micro_batches"] >= 3
    difference = max(
        (a - b).abs().max().item()
        for a, b in zip(whole.module.parameters(), split.module.parameters(), strict=True)
    )
    print(f"max parameter difference, 1 vs {int(metrics['micro_batches'])} micro-batches: {difference:.2e}")
    assert difference < 1e-5


def test_micro_batches_give_the_full_batch_update_with_the_tempered_column(
    tiny_arith_model: Path, groups: list[ScoredGroup], tmp_path: Path
) -> None:
    """RLOO at temperature 0.7 back-propagates through log pi and log pi_T (two columns per row): split
    into micro-batches, the update is still the full batch's, and it differs from the T = 1 update."""
    config = learner_config(tiny_arith_model, tmp_path, "algorithm.name=rloo", "algorithm.beta=0.1")
    batch = build_train_batch(groups, pad_token_id=257)
    alternating = torch.arange(len(batch.rewards)) % 2  # advantages != 0 whatever the model's accuracy
    batch = replace(batch, rewards=alternating.float())
    whole, split, untempered = (fresh_engine(tiny_arith_model, config) for _ in range(3))
    reference = ReferenceModel(tiny_arith_model)
    train_step(whole, reference, batch, config.algorithm, token_budget=100_000, lr=1e-3, temperature=0.7)
    metrics = train_step(split, reference, batch, config.algorithm, token_budget=60, lr=1e-3, temperature=0.7)
    train_step(untempered, reference, batch, config.algorithm, token_budget=100_000, lr=1e-3)
    assert metrics["micro_batches"] >= 3

    def largest_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
        pairs = zip(a.parameters(), b.parameters(), strict=True)
        return max((x - y).abs().max().item() for x, y in pairs)

    assert largest_difference(whole.module, split.module) < 1e-5
    assert largest_difference(whole.module, untempered.module) > 1e-5


def test_bad_groups_are_skipped_with_a_reason_or_stop_the_run(groups: list[ScoredGroup]) -> None:
    good = groups[0]
    unscored = ScoredGroup("u", good.prompt, good.prompt_token_ids, good.samples, [None] * len(good.samples),
                           ["error"] * len(good.samples), [{}] * len(good.samples))  # fmt: skip
    empty_sample = good.samples[0].__class__(
        good.samples[0].prompt_id, good.prompt_token_ids, [], "", [], "stop", 0, "t"
    )
    empty = ScoredGroup("e", good.prompt, good.prompt_token_ids, [empty_sample, good.samples[1]], [0.0, 1.0],
                        ["ok", "ok"], [{}, {}])  # fmt: skip
    single = ScoredGroup("s", good.prompt, good.prompt_token_ids, good.samples[:1], [1.0], ["ok"], [{}])
    kept, skipped = screen_groups([good, unscored, empty, single], stop_on_bad_data=False)
    assert kept == [good]
    assert skipped == {"unscored_or_nonfinite_reward": 1, "empty_completion": 1, "group_of_one": 1}
    with pytest.raises(BadDataError, match="group 'e': empty completion"):
        screen_groups([good, empty], stop_on_bad_data=True)


def test_a_non_finite_reward_is_refused_skipped_or_stops_and_never_steps(
    tiny_arith_model: Path, groups: list[ScoredGroup], tmp_path: Path
) -> None:
    good = groups[0]
    # The record itself refuses a NaN reward marked "ok", so none crosses a wire or enters the buffer ...
    with pytest.raises(SchemaError, match="sample 0 is 'ok' with reward nan"):
        ScoredGroup("n", good.prompt, good.prompt_token_ids, good.samples, [math.nan, 1.0, 0.0, 1.0],
                    ["ok"] * 4, [{}] * 4)  # fmt: skip
    # ... and one that got past it anyway (built in-process, then changed) is screened out.
    poisoned = msgspec.structs.replace(good, group_id="nan")
    msgspec.structs.force_setattr(poisoned, "rewards", [math.inf, *good.rewards[1:]])
    kept, skipped = screen_groups([poisoned, good], stop_on_bad_data=False)
    assert kept == [good] and skipped == {"unscored_or_nonfinite_reward": 1}
    with pytest.raises(BadDataError, match="group 'nan': unscored or nonfinite reward"):
        screen_groups([good, poisoned], stop_on_bad_data=True)

    # The step itself refuses non-finite inputs before anything is back-propagated or stepped.
    config = learner_config(tiny_arith_model, tmp_path)
    engine = fresh_engine(tiny_arith_model, config)
    before = {name: tensor.clone() for name, tensor in engine.module.state_dict().items()}
    batch = build_train_batch(groups[:2], pad_token_id=257)
    rewards = batch.rewards.clone()
    rewards[3] = math.nan
    with pytest.raises(ValueError, match=r"copg_loss: rewards has non-finite values at index \[3\]"):
        poisoned_batch = replace(batch, rewards=rewards)
        train_step(
            engine, ReferenceModel(tiny_arith_model), poisoned_batch, config.algorithm, 100_000, lr=1e-3
        )
    assert all(torch.equal(tensor, before[name]) for name, tensor in engine.module.state_dict().items())
