"""Single-pass micro-batches: whole groups per micro-batch, each forwarded once and back-propagating its
share of the batch loss, give the full-batch gradient, loss and metrics for every loss and variant;
the two-pass fallback (a group larger than the token budget) does too; and the single pass really
forwards each micro-batch once.

The model is a tiny random Qwen2 in float64 (built from a config in milliseconds), and the DeepSpeed
engine is replaced by a recorder that only accumulates gradients, so the accumulated gradient itself is
compared with autograd's full-batch one. One test runs the real DeepSpeed engine on the same path.
"""

from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from core.config import load_config
from core.config.learner import AlgorithmConfig
from core.logprobs import completion_logprobs_at
from core.schemas import Sample, ScoredGroup, TrainBatch, build_train_batch
from learner import engine as ds
from learner import step as step_module
from learner.algorithms import LOSSES, NORMALISERS
from learner.step import plan_group_micro_batches, plan_step, train_step

VOCAB, PAD = 40, 0
BUDGET = 100  # tokens: a few whole groups per micro-batch, several micro-batches per batch
BETA = 0.1
# Log-softmax runs in float32 whatever the model's dtype (core/logprobs.py), and a micro-batch is
# padded to its own width, so equal here means to float32 round-off, relative to the gradient's norm.
TOLERANCE = 1e-6
# Losses and metrics combine sequence log-probs of tens of nats (float32: ~1e-6 nat apart) with
# cancellation (advantages sum to zero), so their values are compared to an absolute 1e-5.
VALUE_TOLERANCE = 1e-5


def tiny_policy(dtype: torch.dtype = torch.float64, seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, pad_token_id=PAD, tie_word_embeddings=False, attn_implementation="eager",
    )  # fmt: skip
    return Qwen2ForCausalLM(config).to(dtype).eval()  # as from_pretrained returns it


def mixed_groups(seed: int = 0) -> list[ScoredGroup]:
    """Groups of 2-5 samples, prompts of 3-6 tokens, completions of 2-12: micro-batches differ in groups,
    rows and width, so a wrong normaliser or a mis-sliced row shows in the gradient."""
    generator = torch.Generator().manual_seed(seed)

    def tokens(count: int) -> list[int]:
        return torch.randint(1, VOCAB, (count,), generator=generator).tolist()

    groups = []
    for index, size in enumerate([2, 5, 3, 4, 2, 3, 5, 2]):
        prompt = tokens(int(torch.randint(3, 7, (1,), generator=generator)))
        lengths = torch.randint(2, 13, (size,), generator=generator).tolist()
        samples = [Sample(f"p{index}", prompt, tokens(n), "", None, "stop", 0, "test") for n in lengths]
        rewards = torch.rand(size, generator=generator).tolist()
        groups.append(ScoredGroup(f"g{index}", "", prompt, samples, rewards, ["ok"] * size, [{}] * size))
    return groups


@dataclass
class RecordingEngine:
    """What train_step needs of a DeepSpeed engine: a callable module on a device. The patched
    begin_step/backward/grad_norm below accumulate gradients into `.grad` and never step."""

    module: torch.nn.Module
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    forwards: int = 0
    backwards: int = 0
    passes_announced: list[int] = field(default_factory=list)

    def __call__(self, **inputs: Any) -> Any:
        self.forwards += 1
        return self.module(**inputs)


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> None:
    def begin_step(engine: RecordingEngine, micro_batches: int, lr: float) -> None:
        engine.passes_announced.append(micro_batches)

    def backward(engine: RecordingEngine, loss: torch.Tensor) -> None:
        engine.backwards += 1
        loss.backward()

    def grad_norm(engine: RecordingEngine, measured: float | None = None) -> float:
        grads = [p.grad.norm() for p in engine.module.parameters() if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack(grads)))

    monkeypatch.setattr(ds, "begin_step", begin_step)
    monkeypatch.setattr(ds, "backward", backward)
    monkeypatch.setattr(ds, "grad_norm", grad_norm)


class FixedReference:
    """Reference log-probs given per row (the step only asks for its rows' values)."""

    def __init__(self, values: torch.Tensor):
        self.values = values

    def logprobs(self, batch: TrainBatch, keys: list, rows: torch.Tensor | None = None) -> torch.Tensor:
        return self.values if rows is None else self.values[rows]


@dataclass(frozen=True)
class Case:
    algorithm: AlgorithmConfig
    temperature: float = 1.0

    @property
    def name(self) -> str:
        a = self.algorithm
        return f"{a.name}-avg{int(a.average_logprobs)}-{a.importance_sampling}-T{self.temperature}"


CASES = [
    *(
        Case(AlgorithmConfig(name=name, beta=BETA, average_logprobs=average))
        for name in LOSSES
        for average in (False, True)
    ),
    Case(AlgorithmConfig(name="rloo", beta=BETA), temperature=0.7),
    Case(AlgorithmConfig(name="rloo", beta=BETA, importance_sampling="truncated", is_cap=1.2)),
    Case(AlgorithmConfig(name="rloo", beta=BETA, importance_sampling="truncated", is_cap=1.2), 0.7),
    Case(
        AlgorithmConfig(name="rloo", beta=BETA, average_logprobs=True, importance_sampling="truncated"), 0.7
    ),
]


def temperatures_of(case: Case) -> tuple[float, ...]:
    rloo_tempered = case.algorithm.name == "rloo" and case.temperature != 1.0
    return (1.0, case.temperature) if rloo_tempered else (1.0,)


def prepared(case: Case) -> tuple[Qwen2ForCausalLM, TrainBatch, torch.Tensor]:
    """The policy, a batch (with behaviour log-probs near the policy's own, so truncated weights are
    both capped and not) and reference log-probs near the policy's (so h != 0)."""
    model = tiny_policy()
    batch = build_train_batch(mixed_groups(), pad_token_id=PAD)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        sampling = completion_logprobs_at(
            model, batch.input_ids, batch.attention_mask, batch.completion_mask, (case.temperature,)
        )[:, 0]
    noise = lambda: 0.3 * torch.randn(len(batch.rewards), generator=generator, dtype=torch.float64)  # noqa: E731
    batch = replace(batch, behaviour_logprobs=(sampling + noise()).float())
    return model, batch, sampling.double() + noise()


def full_batch_loss(model: torch.nn.Module, batch: TrainBatch, ref: torch.Tensor, case: Case) -> torch.Tensor:
    """The loss of the whole batch in one forward pass, written out independently of learner.step."""
    temperatures = temperatures_of(case)
    values = completion_logprobs_at(
        model, batch.input_ids, batch.attention_mask, batch.completion_mask, temperatures
    ).double()
    algorithm = case.algorithm
    options: dict[str, Any] = {}
    if algorithm.average_logprobs:
        options |= {"lengths": batch.completion_lengths, "average_logprobs": True}
    if algorithm.importance_sampling != "none":
        options |= {
            "behaviour_logprobs": batch.behaviour_logprobs.double(),
            "importance_sampling": algorithm.importance_sampling,
            "is_cap": algorithm.is_cap,
        }
    if len(temperatures) == 2:
        options["sampling_logprobs"] = values[:, 1]
    loss_fn = LOSSES[algorithm.name]
    return loss_fn(values[:, 0], ref, batch.rewards, batch.group_index, algorithm.beta, **options).loss


def gradient(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def full_gradient(case: Case) -> tuple[torch.Tensor, float]:
    model, batch, ref = prepared(case)
    loss = full_batch_loss(model, batch, ref, case)
    loss.backward()
    return gradient(model), float(loss.detach())


def stepped(case: Case, budget: int) -> tuple[RecordingEngine, dict[str, Any]]:
    model, batch, ref = prepared(case)
    engine = RecordingEngine(model)
    metrics = train_step(
        engine, FixedReference(ref), batch, case.algorithm, budget, lr=1e-3, temperature=case.temperature
    )  # type: ignore[arg-type]
    return engine, metrics


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.norm())


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_single_pass_gives_the_full_batch_gradient_loss_and_metrics(recording: None, case: Case) -> None:
    expected, expected_loss = full_gradient(case)
    engine, metrics = stepped(case, BUDGET)
    assert metrics["single_pass"] == 1.0 and metrics["micro_batches"] >= 3
    assert relative_difference(gradient(engine.module), expected) < TOLERANCE
    assert metrics["loss"] == pytest.approx(expected_loss, rel=TOLERANCE, abs=VALUE_TOLERANCE)

    # The same step in one micro-batch reports the same metrics (timings aside).
    _, whole = stepped(case, 10**6)
    assert whole["micro_batches"] == 1 and whole["single_pass"] == 1.0
    timing = {"micro_batches", "tokens_per_s", "step_time_s"}
    assert set(whole) == set(metrics)
    for key in set(whole) - timing:
        same = None if whole[key] is None else pytest.approx(whole[key], rel=TOLERANCE, abs=VALUE_TOLERANCE)
        assert metrics[key] == same, key


@pytest.mark.parametrize("name", list(LOSSES))
def test_a_wrong_normaliser_or_a_per_micro_batch_mean_would_be_caught(
    recording: None, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The equality above has teeth: these groups differ in size, so weighting micro-batches by the
    other normaliser, or summing per-micro-batch means, gives a different gradient."""
    case = Case(AlgorithmConfig(name=name, beta=BETA))
    expected, _ = full_gradient(case)
    wrong = {"groups": "samples", "samples": "groups"}[NORMALISERS[name]]
    monkeypatch.setitem(step_module.NORMALISERS, name, wrong)
    engine, _ = stepped(case, BUDGET)
    assert relative_difference(gradient(engine.module), expected) > 1e-3

    model, batch, ref = prepared(case)
    for rows in plan_group_micro_batches(batch, BUDGET) or []:
        part = replace(
            batch, input_ids=batch.input_ids[rows], attention_mask=batch.attention_mask[rows],
            completion_mask=batch.completion_mask[rows], rewards=batch.rewards[rows],
            group_index=batch.group_index[rows],
        )  # fmt: skip
        full_batch_loss(model, part, ref[rows], case).backward()  # a plain mean per micro-batch
    assert relative_difference(gradient(model), expected) > 1e-3


@pytest.mark.parametrize("case", [CASES[0], CASES[-1]], ids=lambda case: case.name)
def test_the_single_pass_forwards_each_micro_batch_once(recording: None, case: Case) -> None:
    engine, metrics = stepped(case, BUDGET)
    passes = int(metrics["micro_batches"])
    assert engine.forwards == passes == engine.backwards == engine.passes_announced[0]


@pytest.mark.parametrize("case", [CASES[0], CASES[5], CASES[-1]], ids=lambda case: case.name)
def test_a_group_over_the_budget_falls_back_to_two_exact_passes(recording: None, case: Case) -> None:
    _, batch, _ = prepared(case)
    longest_row = int(batch.attention_mask.sum(dim=1).max())
    budget = 2 * longest_row  # every row fits, a group of five cannot
    assert plan_group_micro_batches(batch, budget) is None
    expected, expected_loss = full_gradient(case)
    engine, metrics = stepped(case, budget)
    passes = int(metrics["micro_batches"])
    assert metrics["single_pass"] == 0.0 and passes >= 3
    assert engine.forwards == 2 * passes and engine.backwards == passes
    assert relative_difference(gradient(engine.module), expected) < TOLERANCE
    assert metrics["loss"] == pytest.approx(expected_loss, rel=TOLERANCE, abs=VALUE_TOLERANCE)


def test_group_plans_keep_groups_whole_and_within_the_budget() -> None:
    batch = build_train_batch(mixed_groups(), pad_token_id=PAD)
    lengths = batch.attention_mask.sum(dim=1)
    single, plans = plan_step(batch, BUDGET, step_module.Shard.whole(len(batch.rewards)))
    assert single
    (plan,) = plans
    assert torch.equal(torch.cat(plan), torch.arange(len(batch.rewards)))  # every row once, in order
    for rows in plan:
        assert len(rows) * int(lengths[rows].max()) <= BUDGET
        groups = batch.group_index[rows].unique()
        assert int(torch.isin(batch.group_index, groups).sum()) == len(rows)  # whole groups only
    # Rows of a group that are not next to each other cannot be cut at group boundaries: two passes.
    interleaved = replace(batch, group_index=torch.arange(len(batch.rewards)) % 3)
    assert plan_group_micro_batches(interleaved, 10**6) is None


def test_the_deepspeed_engine_takes_the_full_batch_step_in_a_single_pass(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The real engine (ZeRO-2 on the CPU): single-pass micro-batches give DeepSpeed the gradient norm
    and the AdamW step of one micro-batch. Adam's first step is about lr * sign(gradient), which float
    round-off can flip only where a gradient is near zero, so the weights are compared to a small
    fraction of the step size rather than to round-off."""
    config = load_config(None, [f"run.run_dir={tmp_path}"], environ={})
    case = Case(AlgorithmConfig(name="copg", beta=BETA))
    _, batch, ref = prepared(case)
    lr, engines, norms = 1e-2, [], []
    for budget in (10**6, BUDGET):
        model = tiny_policy(torch.float32)
        engine = ds.create_engine(model, config.learner)
        metrics = train_step(engine, FixedReference(ref), batch, case.algorithm, budget, lr=lr)  # type: ignore[arg-type]
        assert metrics["single_pass"] == 1.0
        engines.append(engine)
        norms.append(metrics["grad_norm"])
    assert norms[1] == pytest.approx(norms[0], rel=1e-5)
    start = tiny_policy(torch.float32)
    pairs = list(zip(engines[0].module.parameters(), engines[1].module.parameters(), strict=True))
    moved = max((a - s).abs().max().item() for (a, _), s in zip(pairs, start.parameters(), strict=True))
    difference = max((a - b).abs().max().item() for a, b in pairs)
    assert moved > lr / 2 and difference < lr / 100
