"""Fixtures shared across the suite: the tiny models, built once and cached under models/."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Nothing may reach a model hub; DeepSpeed and vLLM run on the CPU here.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def cached_policy(task: str, directory: Path, tokenizer: str = "char") -> Path:
    """Reuse a finished build (it is renamed into place only when complete), else build it."""
    if not (directory / "tandem_model.json").is_file():
        from core.tinymodels.policy import build_policy

        build_policy(task, directory, tokenizer_kind=tokenizer)  # type: ignore[arg-type]
    return directory


@pytest.fixture(scope="session")
def tiny_arith_model() -> Path:
    """The demo policy (models/tiny-arith), the same one `make demo` builds."""
    return cached_policy("arithmetic", ROOT / "models" / "tiny-arith")


@pytest.fixture(scope="session")
def tiny_code_model() -> Path:
    """The `code` task policy (models/tiny-code), used by configs/code.yaml."""
    return cached_policy("code", ROOT / "models" / "tiny-code")


@pytest.fixture(scope="session")
def tiny_arith_bpe_model() -> Path:
    """The demo policy with a trained byte-level BPE tokenizer (models/tiny-arith-bpe): BOS, a chat
    template; `tandem make-model --tokenizer bpe`."""
    return cached_policy("arithmetic", ROOT / "models" / "tiny-arith-bpe", tokenizer="bpe")
