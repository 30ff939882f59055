"""Real vLLM on the tiny model, weights through the `collective` transport (gloo on this CPU machine):
the same log-prob parity as the other transports, a corrupt bucket refused (the engine then refuses to
generate until a good load), a restarted learner found again, and no spurious reload warning; the
same parity through vLLM's layerwise reload, the path for models a direct load does not serve."""

from pathlib import Path

import pytest
import torch

from core.weight_sync import WeightSyncError, encode_weights
from core.weight_sync.collective_publisher import CollectivePublisher
from core.weight_sync.collective_receiver import CollectiveSubscriber
from tests.actors.test_engine_weights import (
    retrained,  # noqa: F401 - the shared fixture
    worst_logprob_gap,  # the same parity check
)

pytestmark = pytest.mark.slow
BUCKET_BYTES = 256 << 10  # small, so the tiny model travels as several buckets


@pytest.fixture(scope="module")
def engine(tiny_arith_model: Path):  # type: ignore[no-untyped-def]
    from actors.engine import GenerationEngine

    engine = GenerationEngine(tiny_arith_model, seed=0)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("collective-weights")


@pytest.fixture(scope="module")
def publisher(weights_dir: Path):  # type: ignore[no-untyped-def]
    publisher = CollectivePublisher(weights_dir, bucket_bytes=BUCKET_BYTES, timeout_s=20.0)
    yield publisher
    publisher.close()


def test_logprobs_after_a_collective_load_match_transformers(  # type: ignore[no-untyped-def]
    engine,
    publisher: CollectivePublisher,
    weights_dir: Path,
    retrained: torch.nn.Module,  # noqa: F811 - the imported fixture
    tiny_arith_model: Path,
) -> None:
    subscriber = CollectiveSubscriber(weights_dir)
    publisher.publish(retrained.state_dict(), version=1)
    assert publisher._current is not None and len(publisher._current.plan.buckets) > 1
    offer = subscriber.latest()
    assert offer is not None and offer.version == 1
    assert engine.load_weights(offer) == 1 and engine.policy_version == 1
    # An unquantized model loads straight into its parameters (actors/direct_load.py): vLLM's
    # layerwise reload, and its rotary warning, are not involved; nothing was logged.
    assert engine.load_path == "direct" and engine.reload_warnings == []
    worst = worst_logprob_gap(engine, retrained, tiny_arith_model, version=1)
    print(f"log-prob parity after a collective load: max |vLLM - transformers| = {worst:.2e}")
    assert worst < 1e-3


def test_a_corrupt_bucket_makes_the_engine_refuse_until_a_good_load(  # type: ignore[no-untyped-def]
    engine,
    publisher: CollectivePublisher,
    weights_dir: Path,
    retrained: torch.nn.Module,  # noqa: F811 - the imported fixture
    tiny_arith_model: Path,
) -> None:
    from actors.engine import PromptRequest, SamplingSettings

    subscriber = CollectiveSubscriber(weights_dir)
    publisher.publish(retrained.state_dict(), version=2)
    snapshot = publisher._current
    assert snapshot is not None
    snapshot.buffers[-1][7] ^= 0x01  # the last bucket: earlier ones have streamed in when it is refused
    offer = subscriber.latest()
    assert offer is not None
    with pytest.raises(WeightSyncError, match=r"bucket \d+ of \d+ arrived with fingerprint"):
        engine.load_weights(offer)
    assert engine.policy_version is None
    with pytest.raises(WeightSyncError, match="weights are unknown"):
        engine.generate([PromptRequest("p", "1+1=")], n=1, sampling=SamplingSettings(max_tokens=2))
    publisher.publish(retrained.state_dict(), version=3)
    assert engine.load_weights(subscriber.latest()) == 3  # type: ignore[arg-type]
    assert worst_logprob_gap(engine, retrained, tiny_arith_model, version=3) < 1e-3


def test_a_restarted_learner_is_found_again_and_file_loads_warn_no_more(  # type: ignore[no-untyped-def]
    engine,
    publisher: CollectivePublisher,
    weights_dir: Path,
    retrained: torch.nn.Module,  # noqa: F811 - the imported fixture
    tiny_arith_model: Path,
) -> None:
    subscriber = CollectiveSubscriber(weights_dir)
    publisher.publish(retrained.state_dict(), version=4)
    assert engine.load_weights(subscriber.latest()) == 4  # type: ignore[arg-type]
    publisher.close()
    restarted = CollectivePublisher(weights_dir, bucket_bytes=BUCKET_BYTES, timeout_s=20.0)
    try:
        assert restarted.rendezvous != publisher.rendezvous  # a new store: the workers must join again
        restarted.publish(retrained.state_dict(), version=5)
        offer = subscriber.latest()
        assert offer is not None and offer.version == 5
        assert engine.load_weights(offer) == 5 and engine.reload_warnings == []
        assert worst_logprob_gap(engine, retrained, tiny_arith_model, version=5) < 1e-3
    finally:
        restarted.close()
    assert engine.load_weights(encode_weights(retrained.state_dict(), version=6)) == 6
    assert engine.load_path == "direct" and engine.reload_warnings == []  # the blob path too


def test_the_layerwise_fallback_loads_exactly_and_drops_only_the_rotary_warning(  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    retrained: torch.nn.Module,  # noqa: F811 - the imported fixture
    tiny_arith_model: Path,
) -> None:
    """A model the direct load does not serve (quantized, say) goes through vLLM's layerwise reload:
    forced here by the environment switch, which the engine's worker process inherits (an in-process
    engine would bind this test process's threads for the rest of the suite)."""
    from actors.direct_load import FORCE_LAYERWISE
    from actors.engine import GenerationEngine

    monkeypatch.setenv(FORCE_LAYERWISE, "1")
    engine = GenerationEngine(tiny_arith_model, seed=0)
    try:
        assert engine.load_weights(encode_weights(retrained.state_dict(), version=1)) == 1
        assert engine.load_path == "layerwise"
        # vLLM logged `RotaryEmbedding: Failed to load weights` (so the filter is not dead code), and
        # it was dropped: nothing else was logged.
        assert engine.reload_warnings == [] and engine.rotary_warnings_dropped > 0
        assert worst_logprob_gap(engine, retrained, tiny_arith_model, version=1) < 1e-3
    finally:
        engine.close()
