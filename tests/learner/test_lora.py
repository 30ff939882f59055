"""LoRA in the learner (learner/lora.py) on a small random Qwen2 built from a config: only the adapter
trains (through the DeepSpeed engine); the adapter-off reference is the base model exactly and shares
its weight tensors; the merged weights are what the policy computes with, under the base model's
names, and load into a plain transformers model; the export holds the merged model and the adapter.
"""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from core.config import load_config
from core.config.model import LoraConfig
from core.logprobs import completion_logprobs
from core.reference_model import ReferenceModel
from learner import engine as ds
from learner.lora import (
    ADAPTER_DIR,
    AdapterOff,
    apply_lora,
    is_lora,
    merged_state_dict,
    save_lora_export,
    trainable_parameters,
)

LORA = LoraConfig(rank=4, alpha=8.0)


def random_qwen2(seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False,
    )  # fmt: skip
    return Qwen2ForCausalLM(config).eval()


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 64, (3, 12), generator=generator)
    attention = torch.ones_like(input_ids)
    completion = torch.zeros_like(input_ids)
    completion[:, 6:] = 1
    return input_ids, attention, completion


def logprobs(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return completion_logprobs(model, *batch())


def train_adapter(policy: torch.nn.Module, steps: int = 3) -> None:
    """A few optimizer steps through the DeepSpeed engine the learner uses, so B moves from zero."""
    config = load_config(overrides=["learner.lr=1e-2"])
    engine = ds.create_engine(policy, config.learner)
    for _ in range(steps):
        ds.begin_step(engine, 1, 1e-2)
        loss = -completion_logprobs(engine, *batch()).mean()
        ds.backward(engine, loss)  # steps the optimizer (one micro-batch per step)


def test_only_the_adapter_trains_and_the_initial_policy_is_the_base() -> None:
    base_logprobs = logprobs(random_qwen2())
    policy = apply_lora(random_qwen2(), LORA)
    assert torch.equal(logprobs(policy), base_logprobs)  # B = 0 at the start
    trainable = trainable_parameters(policy)
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
    # Seven projections in each of the two layers, an A and a B each.
    assert len(trainable) == 2 * 7 * 2
    frozen = {name: p.detach().clone() for name, p in policy.named_parameters() if not p.requires_grad}
    train_adapter(policy)
    assert not torch.allclose(logprobs(policy), base_logprobs)
    for name, parameter in policy.named_parameters():
        if name in frozen:
            assert torch.equal(parameter, frozen[name]), f"{name} is frozen but changed"


def test_the_reference_is_the_base_model_with_no_second_copy() -> None:
    base_logprobs = logprobs(random_qwen2())
    policy = apply_lora(random_qwen2(), LORA)
    train_adapter(policy)
    reference = ReferenceModel.of_module(AdapterOff(policy))
    assert torch.equal(logprobs(reference.model), base_logprobs)
    assert not torch.allclose(logprobs(policy), base_logprobs)  # the adapter is on again after
    # The reference holds no tensors of its own: every one it reaches is the policy's storage.
    policy_storages = {p.data_ptr() for p in policy.parameters()}
    assert {p.data_ptr() for p in reference.model.parameters()} <= policy_storages


def test_merged_weights_compute_the_policy_under_the_base_models_names(tmp_path: Path) -> None:
    policy = apply_lora(random_qwen2(), LORA)
    train_adapter(policy)
    merged = merged_state_dict(policy)
    plain = random_qwen2(seed=5)
    assert set(merged) == set(plain.state_dict())
    # A full fine-tuning policy goes out as its own state dict.
    assert is_lora(policy) and not is_lora(plain)
    assert all(torch.equal(merged_state_dict(plain)[k], v) for k, v in plain.state_dict().items())
    plain.load_state_dict(merged)
    torch.testing.assert_close(logprobs(plain), logprobs(policy), atol=1e-5, rtol=0)
    # The module is untouched: merging twice gives the same tensors, and the adapter is still apart.
    again = merged_state_dict(policy)
    assert all(torch.equal(again[name], tensor) for name, tensor in merged.items())
    assert trainable_parameters(policy)

    export = tmp_path / "step" / "hf"
    save_lora_export(policy, export)
    loaded = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32).eval()
    torch.testing.assert_close(logprobs(loaded), logprobs(policy), atol=1e-5, rtol=0)
    from peft import PeftModel

    adapter = PeftModel.from_pretrained(random_qwen2(), tmp_path / "step" / ADAPTER_DIR).eval()
    torch.testing.assert_close(logprobs(adapter), logprobs(policy), atol=1e-6, rtol=0)


def test_a_target_name_the_model_lacks_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match=r"no linear layer named \['q_porj'\]"):
        apply_lora(random_qwen2(), LoraConfig(target_modules=["q_proj", "q_porj"]))


class SavingEngine:
    """What `save_checkpoint` asks of a DeepSpeed engine, around a real module (no optimizer state)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def save_checkpoint(self, directory: str, tag: str, client_state: dict) -> None:
        (Path(directory) / tag).mkdir(parents=True, exist_ok=True)

    def zero_optimization_stage(self) -> int:
        return 0


def test_a_lora_checkpoint_exports_the_merged_model_the_adapter_and_the_chat_template(tmp_path: Path) -> None:
    from core.tinymodels.tokenizer import build_bpe_tokenizer
    from core.tokenization import has_chat_template
    from learner.checkpoint import LearnerState, save_checkpoint

    tokenizer_dir = tmp_path / "tokenizer"
    build_bpe_tokenizer(["1+1=", "2"]).save_pretrained(tokenizer_dir)  # transformers 5: chat_template.jinja
    assert (tokenizer_dir / "chat_template.jinja").is_file()
    policy = apply_lora(random_qwen2(), LORA)
    train_adapter(policy)
    path = save_checkpoint(
        SavingEngine(policy), LearnerState(step=1, policy_version=1), tmp_path / "run", tokenizer_dir
    )
    assert has_chat_template(path / "hf") and (path / ADAPTER_DIR / "adapter_config.json").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(path / "hf", dtype=torch.float32).eval()
    torch.testing.assert_close(logprobs(loaded), logprobs(policy), atol=1e-5, rtol=0)
