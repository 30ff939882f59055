"""The learner's precision, attention and activation-checkpointing options (`learner.precision`,
`learner.attention`, `learner.activation_checkpointing`) on a tiny random Qwen2: sdpa and eager give
the same log-probs, checkpointing recomputes the layers and leaves the gradients as they were, and
bf16 trains through DeepSpeed's bf16 mode with float32 master weights (or is refused, naming the
field, where DeepSpeed's accelerator has no bf16)."""

import pytest
import torch
from test_single_pass_microbatch import BETA, Case, FixedReference, mixed_groups, prepared, tiny_policy

from core.config import load_config
from core.config.learner import AlgorithmConfig, LearnerConfig
from core.logprobs import completion_logprobs_at
from core.schemas import build_train_batch
from learner import engine as ds
from learner.step import train_step


def logprobs_and_gradients(model: torch.nn.Module) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Log pi of every row of a right-padded batch of mixed lengths, and the gradient of their sum."""
    batch = build_train_batch(mixed_groups(), pad_token_id=0)
    values = completion_logprobs_at(
        model, batch.input_ids, batch.attention_mask, batch.completion_mask, (1.0,)
    )[:, 0]
    model.zero_grad(set_to_none=True)
    (values * torch.linspace(-1, 1, len(values))).sum().backward()
    return values.detach(), [p.grad.detach().clone() for p in model.parameters()]


def test_sdpa_and_eager_attention_give_the_same_logprobs() -> None:
    found = {}
    for attention in ("eager", "sdpa"):
        model = ds.prepare_model(tiny_policy(torch.float32), LearnerConfig(attention=attention))
        assert model.config._attn_implementation == attention
        found[attention] = logprobs_and_gradients(model)
    (eager, eager_grads), (sdpa, sdpa_grads) = found["eager"], found["sdpa"]
    assert torch.allclose(sdpa, eager, rtol=0, atol=1e-4), (sdpa - eager).abs().max()
    for a, b in zip(sdpa_grads, eager_grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5)


def test_activation_checkpointing_recomputes_layers_and_keeps_the_gradients() -> None:
    plain = logprobs_and_gradients(ds.prepare_model(tiny_policy(), LearnerConfig()))
    model = ds.prepare_model(tiny_policy(), LearnerConfig(activation_checkpointing=True))
    calls = []
    layer = model.model.layers[0]
    layer.register_forward_pre_hook(lambda *_, calls=calls: calls.append(1))
    values, grads = logprobs_and_gradients(model)
    # One forward in the forward pass, one more in the backward pass: the layer was checkpointed.
    assert len(calls) == 2
    assert not any(m.training for m in layer.modules() if m is not layer)  # dropout stays off
    assert torch.allclose(values, plain[0], rtol=0, atol=1e-10)
    for a, b in zip(grads, plain[1], strict=True):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


def test_without_checkpointing_a_layer_runs_once() -> None:
    model = ds.prepare_model(tiny_policy(), LearnerConfig())
    calls = []
    model.model.layers[0].register_forward_pre_hook(lambda *_, calls=calls: calls.append(1))
    logprobs_and_gradients(model)
    assert len(calls) == 1


def test_bf16_is_deepspeeds_bf16_mode_or_refused_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "bf16" not in ds.deepspeed_config(LearnerConfig())
    assert ds.deepspeed_config(LearnerConfig(precision="bf16"))["bf16"] == {"enabled": True}
    # PyTorch's fused AdamW kernel on CUDA only (it has none for the CPU).
    assert ds.deepspeed_config(LearnerConfig(), "cuda")["optimizer"]["params"]["fused"] is True
    assert "fused" not in ds.deepspeed_config(LearnerConfig(), "cpu")["optimizer"]["params"]
    from deepspeed.accelerator import get_accelerator

    monkeypatch.setattr(get_accelerator(), "is_bf16_supported", lambda: False)
    with pytest.raises(ValueError, match=r"learner\.precision=bf16: .* set learner\.precision: fp32"):
        ds.check_precision(LearnerConfig(precision="bf16"))
    ds.check_precision(LearnerConfig())  # fp32 is never refused


def test_a_bf16_step_trains_bf16_weights_from_float32_master_weights(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from deepspeed.accelerator import get_accelerator

    if not get_accelerator().is_bf16_supported():
        pytest.skip("DeepSpeed's accelerator here has no bf16")
    config = load_config(None, [f"run.run_dir={tmp_path}", "learner.precision=bf16"], environ={})
    engine = ds.create_engine(tiny_policy(torch.float32), config.learner)
    assert all(p.dtype == torch.bfloat16 for p in engine.module.parameters())
    masters = engine.optimizer.single_partition_of_fp32_groups  # ZeRO-2, the default stage
    assert all(master.dtype == torch.float32 for master in masters)
    case = Case(AlgorithmConfig(name="copg", beta=BETA))
    _, batch, ref = prepared(case)
    before = [p.detach().clone() for p in engine.module.parameters()]
    metrics = train_step(engine, FixedReference(ref), batch, case.algorithm, 10**6, lr=1e-2)  # type: ignore[arg-type]
    assert torch.isfinite(torch.tensor(metrics["loss"])) and metrics["grad_norm"] > 0
    moved = max(
        (p.detach() - b).abs().max().item() for p, b in zip(engine.module.parameters(), before, strict=True)
    )
    assert moved > 0


def test_a_lora_policy_takes_the_attention_and_checkpointing_options() -> None:
    """The learner wraps a LoRA policy in peft before the engine (learner/run.py): the options reach
    the model under the adapter, and checkpointing leaves the adapter's gradients as they were."""
    from core.config.model import LoraConfig
    from learner.lora import apply_lora

    def lora_policy(checkpointing: bool) -> torch.nn.Module:
        model = apply_lora(tiny_policy(), LoraConfig(rank=4))
        for name, parameter in model.named_parameters():
            if "lora_B" in name:  # B starts at zero, which would leave A without a gradient
                torch.nn.init.normal_(parameter, std=0.1, generator=torch.Generator().manual_seed(1))
        options = LearnerConfig(attention="eager", activation_checkpointing=checkpointing)
        return ds.prepare_model(model, options)

    found = []
    for checkpointing in (False, True):
        model = lora_policy(checkpointing)
        assert model.config._attn_implementation == "eager"
        calls: list[int] = []
        model.base_model.model.model.layers[0].register_forward_pre_hook(
            lambda *_, calls=calls: calls.append(1)
        )
        batch = build_train_batch(mixed_groups(), pad_token_id=0)
        values = completion_logprobs_at(
            model, batch.input_ids, batch.attention_mask, batch.completion_mask, (1.0,)
        )[:, 0]
        (values * torch.linspace(-1, 1, len(values))).sum().backward()
        assert len(calls) == (2 if checkpointing else 1)
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert grads and all(g is not None and bool(g.abs().sum() > 0) for g in grads)
        found.append((values.detach(), grads))
    assert torch.allclose(found[0][0], found[1][0], rtol=0, atol=1e-10)
    for a, b in zip(found[0][1], found[1][1], strict=True):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
