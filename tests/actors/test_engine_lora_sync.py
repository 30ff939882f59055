"""Real vLLM on the tiny model, LoRA weight sync (issue 20): the learner publishes the adapter alone
and the engine merges it into its base weights. Log-prob parity with the learner's policy (the peft
model, adapter on) after a sync through the filesystem blob and through the collective buckets; a
second version merges from the base, not from the first; a corrupt adapter is refused with the version
and the weights kept; a fresh engine (a restarted actor) loading only the newest adapter ends up with
exactly the weights of the engine that loaded every version."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from core.config.model import LoraConfig
from core.weight_sync import PublishedWeights, WeightSyncError, encode_weights
from core.weight_sync.collective_publisher import CollectivePublisher
from core.weight_sync.collective_receiver import CollectiveSubscriber
from core.weight_sync.filesystem import FilesystemPublisher, FilesystemSubscriber
from learner.lora import adapter_state_dict, apply_lora, merged_state_dict
from tests.actors.test_engine_weights import worst_logprob_gap

pytestmark = pytest.mark.slow


def lora_policy(model_path: Path, seed: int) -> torch.nn.Module:
    """The tiny model with a rank-8 adapter on every projection, A and B random (a trained adapter)."""
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    policy = apply_lora(base, LoraConfig(rank=8, alpha=16.0))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if ".lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return policy


@pytest.fixture(scope="module")
def engine(tiny_arith_model: Path):  # type: ignore[no-untyped-def]
    from actors.engine import GenerationEngine

    engine = GenerationEngine(tiny_arith_model, seed=0)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def collective(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    directory = tmp_path_factory.mktemp("collective-weights")
    publisher = CollectivePublisher(directory, bucket_bytes=64 << 10, timeout_s=20.0)
    yield publisher, CollectiveSubscriber(directory)
    publisher.close()


def test_an_adapter_sync_gives_the_learners_policy_and_versions_do_not_accumulate(  # type: ignore[no-untyped-def]
    engine, tiny_arith_model: Path, tmp_path: Path
) -> None:
    publisher, subscriber = (
        FilesystemPublisher(tmp_path / "weights"),
        FilesystemSubscriber(tmp_path / "weights"),
    )
    base = AutoModelForCausalLM.from_pretrained(tiny_arith_model, dtype=torch.float32).eval()
    for version, seed in ((1, 1), (2, 2)):
        policy = lora_policy(tiny_arith_model, seed)
        manifest = publisher.publish(adapter_state_dict(policy), version)
        full_bytes = encode_weights(merged_state_dict(policy), version).manifest.num_bytes
        print(f"v{version}: adapter {manifest.num_bytes} bytes, merged model {full_bytes} bytes")
        published = subscriber.latest()
        assert published is not None
        assert engine.load_weights(published) == version == engine.policy_version
        # Only the adapted layers are written (straight into the parameters); nothing is logged.
        assert engine.load_path == "direct" and engine.reload_warnings == []
        worst = worst_logprob_gap(engine, policy, tiny_arith_model, version=version)
        print(f"log-prob parity after adapter sync v{version}: max |vLLM - learner| = {worst:.2e}")
        assert worst < 1e-3
        # The adapter moved the policy well beyond that tolerance: the parity is not the base's.
        moved = worst_logprob_gap(engine, base, tiny_arith_model, version=version)
        print(f"  the same samples under the base model: max gap {moved:.2e}")
        assert moved > 1e-2


def test_a_corrupt_adapter_is_refused_and_the_engine_keeps_its_version(  # type: ignore[no-untyped-def]
    engine, tiny_arith_model: Path
) -> None:
    current = engine.policy_version
    digest = engine.parameter_digest()
    published = encode_weights(adapter_state_dict(lora_policy(tiny_arith_model, seed=9)), current + 1)
    corrupt = bytearray(published.blob)
    corrupt[-5] ^= 0x55
    with pytest.raises(WeightSyncError, match=f"v{current + 1}: checksum mismatch"):
        engine.load_weights(PublishedWeights(published.manifest, bytes(corrupt)))
    assert engine.policy_version == current
    assert engine.parameter_digest() == digest


def test_a_collective_adapter_sync_and_a_fresh_engine_get_base_plus_the_current_adapter(  # type: ignore[no-untyped-def]
    engine, collective, tiny_arith_model: Path
) -> None:
    from actors.engine import GenerationEngine

    publisher, subscriber = collective
    policy = lora_policy(tiny_arith_model, seed=3)
    version = engine.policy_version + 1
    publisher.publish(adapter_state_dict(policy), version)
    offer = subscriber.latest()
    assert offer is not None and engine.load_weights(offer) == version
    assert engine.reload_warnings == [] and engine.load_seconds["merge"] >= 0.0
    worst = worst_logprob_gap(engine, policy, tiny_arith_model, version=version)
    print(f"log-prob parity after a collective adapter sync: max |vLLM - learner| = {worst:.2e}")
    assert worst < 1e-3
    # Not the previous version's policy still (that one is far from this one).
    assert worst_logprob_gap(engine, lora_policy(tiny_arith_model, seed=2), tiny_arith_model, version) > 1e-2

    fresh = GenerationEngine(tiny_arith_model, seed=0)  # a restarted actor: the base model from disk
    try:
        offer = subscriber.latest()
        assert offer is not None and fresh.load_weights(offer) == version
        # The engine that merged v1, v2 and now this one holds exactly what base + this one gives.
        assert fresh.parameter_digest() == engine.parameter_digest()
        worst = worst_logprob_gap(fresh, policy, tiny_arith_model, version=version)
        print(f"log-prob parity in a fresh engine: max |vLLM - learner| = {worst:.2e}")
        assert worst < 1e-3
    finally:
        fresh.close()
