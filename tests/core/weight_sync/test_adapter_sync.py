"""Adapter-only weight sync without an engine (core/weight_sync/adapter.py, actors/adapter_merge.py,
learner/lora.py `adapter_state_dict`) on a small random Qwen2 with a peft adapter whose B is random:
the published adapter, verified and merged into the base from the model folder, is exactly the
learner's merged policy, for the filesystem blob and the collective buckets alike; a second version
merges from the base (no accumulation); each merged engine layer gets all of its checkpoint tensors;
bad payloads are refused, naming what is wrong."""

from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from actors.adapter_merge import AdapterMerger
from core.config.model import LoraConfig
from core.weight_sync.adapter import (
    AdapterFactor,
    adapter_payload,
    engine_layer,
    is_adapter_payload,
    read_adapter_payload,
    reload_names,
)
from core.weight_sync.buckets import pack, plan_buckets, view
from core.weight_sync.manifest import PublishedWeights, WeightSyncError, decode_weights, encode_weights
from learner.lora import adapter_state_dict, apply_lora, merged_state_dict

# vLLM's Qwen2 fuses these (its `packed_modules_mapping`).
QWEN2_PACKED = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}


def qwen2_config() -> Qwen2Config:
    return Qwen2Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True,
    )  # fmt: skip


def lora_policy(target_modules: list[str], seed: int) -> torch.nn.Module:
    torch.manual_seed(0)
    base = Qwen2ForCausalLM(qwen2_config()).eval()
    policy = apply_lora(base, LoraConfig(rank=4, alpha=8.0, target_modules=target_modules))
    randomise_adapter(policy, seed)
    return policy


def randomise_adapter(policy: torch.nn.Module, seed: int) -> None:
    """B starts at zero (the adapter then changes nothing); a trained one does not."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if ".lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    """The base model's folder, as the actors' engine was started from it (the same seed: the same
    weights as every `lora_policy`'s base)."""
    torch.manual_seed(0)
    Qwen2ForCausalLM(qwen2_config()).save_pretrained(tmp_path / "base")
    return tmp_path / "base"


def test_a_verified_adapter_merges_into_exactly_the_learners_policy(base_dir: Path) -> None:
    policy = lora_policy(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], seed=1
    )
    payload = adapter_state_dict(policy)
    merged = merged_state_dict(policy)
    published = encode_weights(payload, version=3)
    full = encode_weights(merged, version=3)
    print(
        f"adapter payload {published.manifest.num_bytes} bytes, merged model {full.manifest.num_bytes} bytes"
    )
    assert published.manifest.num_bytes < full.manifest.num_bytes / 2

    factors = read_adapter_payload(decode_weights(published), version=3)
    assert set(factors) == {name for name in merged if name.endswith("_proj.weight")}
    loaded = AdapterMerger(base_dir, QWEN2_PACKED).merge(factors, version=3)
    # Every tensor of the adapted layers (q/k/v biases included), none of the others.
    assert set(loaded) == {name for name in merged if "_proj." in name}
    for name, tensor in loaded.items():
        assert torch.equal(tensor, merged[name]), name  # bit for bit: the same operations as peft


def test_the_collective_buckets_carry_an_adapter_intact(base_dir: Path) -> None:
    policy = lora_policy(["q_proj", "down_proj"], seed=2)
    payload = adapter_state_dict(policy)
    plan, buffers = pack(payload, plan_buckets(payload, 5, bucket_bytes=4096), torch.device("cpu"))
    assert len(plan.buckets) > 1  # the 1-element scaling tensors travel like the rest
    received = {
        slot.name: view(buffers[i], slot).clone() for i, b in enumerate(plan.buckets) for slot in b.slots
    }
    assert is_adapter_payload(received)
    loaded = AdapterMerger(base_dir, QWEN2_PACKED).merge(read_adapter_payload(received, 5), 5)
    merged = merged_state_dict(policy)
    for name, tensor in loaded.items():
        assert torch.equal(tensor, merged[name]), name


def test_each_version_merges_from_the_base_not_from_the_last_merge(base_dir: Path) -> None:
    merger = AdapterMerger(base_dir, QWEN2_PACKED)
    first = lora_policy(["q_proj", "v_proj"], seed=1)
    second = lora_policy(["q_proj", "v_proj"], seed=2)
    merger.merge(read_adapter_payload(adapter_state_dict(first), 1), 1)
    loaded = merger.merge(read_adapter_payload(adapter_state_dict(second), 2), 2)
    merged = merged_state_dict(second)
    for name, tensor in loaded.items():
        assert torch.equal(tensor, merged[name]), name
    # q and v adapted: k (and all three biases) go along, since vLLM rebuilds qkv_proj from all of them.
    assert "model.layers.0.self_attn.k_proj.weight" in loaded
    assert "model.layers.0.self_attn.k_proj.bias" in loaded
    assert torch.equal(
        loaded["model.layers.0.self_attn.k_proj.weight"], merged["model.layers.0.self_attn.k_proj.weight"]
    )


def test_reload_names_widen_to_whole_engine_layers() -> None:
    checkpoint = [
        "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj.bias",
        "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.k_proj.bias",
        "model.layers.0.self_attn.o_proj.weight", "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.down_proj.weight", "model.norm.weight",
    ]  # fmt: skip
    assert (
        engine_layer("model.layers.0.self_attn.k_proj.bias", QWEN2_PACKED)
        == "model.layers.0.self_attn.qkv_proj"
    )
    assert (
        reload_names(["model.layers.0.self_attn.q_proj.weight"], checkpoint, QWEN2_PACKED) == checkpoint[:4]
    )
    assert reload_names(["model.layers.0.mlp.up_proj.weight"], checkpoint, QWEN2_PACKED) == checkpoint[5:7]
    assert reload_names(["model.layers.0.self_attn.o_proj.weight"], checkpoint, {}) == [checkpoint[4]]
    with pytest.raises(WeightSyncError, match=r"lm_head\.weight"):
        reload_names(["lm_head.weight"], checkpoint, QWEN2_PACKED)


def test_bad_adapter_payloads_are_refused_naming_the_problem(base_dir: Path) -> None:
    payload = adapter_state_dict(lora_policy(["q_proj"], seed=1))
    name = "model.layers.0.self_attn.q_proj.weight"
    with pytest.raises(WeightSyncError, match="mixes adapter tensors"):
        is_adapter_payload([*payload, "model.norm.weight"])
    incomplete = {key: value for key, value in payload.items() if key != f"{name}::lora_B"}
    with pytest.raises(WeightSyncError, match=rf"{name} lacks \['lora_B'\]"):
        read_adapter_payload(incomplete, 4)
    with pytest.raises(WeightSyncError, match="lora_C"):
        read_adapter_payload({**payload, f"{name}::lora_C": torch.zeros(1)}, 4)
    wrong = {**payload, f"{name}::lora_B": torch.zeros(32, 5)}
    with pytest.raises(WeightSyncError, match="lora_B \\(32, 5\\)"):
        read_adapter_payload(wrong, 4)
    misfit = {
        "model.layers.0.mlp.down_proj.weight": AdapterFactor(torch.zeros(4, 32), torch.zeros(32, 4), 2.0)
    }
    with pytest.raises(WeightSyncError, match=r"down_proj.weight is \(32, 64\) in the base model"):
        AdapterMerger(base_dir, QWEN2_PACKED).merge(misfit, 4)
    with pytest.raises(WeightSyncError, match="no safetensors weights"):
        AdapterMerger(base_dir.parent / "nowhere", QWEN2_PACKED)


def test_a_corrupt_adapter_blob_fails_its_checksum() -> None:
    published = encode_weights(adapter_state_dict(lora_policy(["q_proj"], seed=1)), version=7)
    corrupt = bytearray(published.blob)
    corrupt[-3] ^= 0x10  # in the last tensor's bytes
    with pytest.raises(WeightSyncError, match="v7: checksum mismatch"):
        decode_weights(PublishedWeights(published.manifest, bytes(corrupt)))


def test_a_trainable_tensor_outside_the_adapter_is_refused() -> None:
    policy = lora_policy(["q_proj"], seed=1)
    policy.get_base_model().model.norm.weight.requires_grad_(True)
    with pytest.raises(ValueError, match=r"model\.norm\.weight"):
        adapter_state_dict(policy)


def test_the_payload_names_round_trip() -> None:
    factor = AdapterFactor(torch.ones(2, 3), torch.ones(4, 2), 0.5)
    payload = adapter_payload({"x.weight": factor})
    assert sorted(payload) == ["x.weight::lora_A", "x.weight::lora_B", "x.weight::lora_scaling"]
    (read,) = read_adapter_payload(payload, 0).values()
    assert read.scaling == 0.5 and torch.equal(read.delta(), torch.full((4, 3), 1.0))
