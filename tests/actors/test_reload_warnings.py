"""vLLM's reload warnings as the worker sees them: the rotary embedding's harmless `Failed to load
weights` is dropped (its only tensor, `cos_sin_cache`, is derived from the config and is never in a
checkpoint) and counted, any other layer's is kept and reported. That a real reload does log it (so
the filter is not dead code) is checked on a real engine in tests/actors/test_engine_collective.py."""

import logging

from actors.weight_receiver import INPLACE_LOGGER, RELOAD_LOGGER, reload_warnings


def test_only_the_rotary_embeddings_failed_load_is_dropped() -> None:
    logger = logging.getLogger(RELOAD_LOGGER)
    with reload_warnings() as warnings:
        logger.warning("%s: Failed to load weights", "RotaryEmbedding")
        logger.warning("%s: Failed to load weights", "Llama3RotaryEmbedding")
        logger.warning("%s: Failed to load weights", "QKVParallelLinear")
        logger.warning("Following weights were not loaded from checkpoint: %s", {"model.norm.weight"})
        logger.info("%s: Processed", "RMSNorm")  # below WARNING: not reported
    assert warnings.messages == [
        "QKVParallelLinear: Failed to load weights",
        "Following weights were not loaded from checkpoint: {'model.norm.weight'}",
    ]
    assert warnings.rotary_dropped == 2
    with reload_warnings() as again:  # the filter is installed once, the collector per load
        logger.warning("%s: Failed to load weights", "RotaryEmbedding")
    assert again.messages == [] and again.rotary_dropped == 1 and len(logger.filters) == 1


def test_the_filter_drops_it_for_every_handler_not_only_ours() -> None:
    """vLLM's own console handler sits on the `vllm` logger; a filter on the reload's logger runs
    before any handler, so the message never reaches the console either, even outside a load."""

    class Seen(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    logger = logging.getLogger(RELOAD_LOGGER)
    with reload_warnings():
        pass
    seen = Seen()
    vllm_logger = logging.getLogger("vllm")  # where vLLM's own handler lives
    vllm_logger.addHandler(seen)
    try:
        logger.warning("%s: Failed to load weights", "RotaryEmbedding")
        logger.warning("%s: Failed to load weights", "RMSNorm")
    finally:
        vllm_logger.removeHandler(seen)
    assert seen.messages == ["RMSNorm: Failed to load weights"]


def test_an_adapter_load_counts_the_layers_it_left_alone_and_keeps_other_warnings() -> None:
    """An adapter load reloads the adapted layers only: vLLM's messages about the others (no tensor
    received, weights kept) are counted, not reported; afterwards a full load reports them again."""
    logger = logging.getLogger(RELOAD_LOGGER)
    inplace = logging.getLogger(INPLACE_LOGGER)
    with reload_warnings(partial=True) as warnings:
        logger.warning("%s: Failed to load weights", "RotaryEmbedding")
        logger.warning("%s: Failed to load weights", "VocabParallelEmbedding")
        logger.warning("%s: Failed to load weights", "RMSNorm")
        inplace.warning("Following weights were not loaded from checkpoint: %s", {"model.norm.weight"})
        logger.warning("%s: Excessive buffering", "QKVParallelLinear")
    assert warnings.messages == ["QKVParallelLinear: Excessive buffering"]
    assert warnings.rotary_dropped == 1 and warnings.untouched_layers == 2
    with reload_warnings() as full:
        logger.warning("%s: Failed to load weights", "RMSNorm")
    assert full.messages == ["RMSNorm: Failed to load weights"] and full.untouched_layers == 0
    assert len(inplace.filters) == 0
