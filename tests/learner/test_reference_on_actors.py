"""Reference log-probs computed on the actors' side (`model.reference_on: actors`).

An actor's reference stamps each sample with log pi_ref(y|x) and the reference's identity; the learner
takes a stamp only from its own reference (same files, same dtype), computes the rows nobody stamped
(offline groups) or that another reference stamped, and the values it takes are the ones it would
have computed itself.
"""

import shutil
from pathlib import Path

import msgspec
import pytest
import torch
from learner_support import sampled_groups

from core.reference_model import ReferenceModel, reference_identity
from core.schemas import ScoredGroup, build_train_batch
from learner.step import row_keys

pytestmark = pytest.mark.slow


def stamped(groups: list[ScoredGroup], reference: ReferenceModel) -> list[ScoredGroup]:
    """The groups as an actor pushes them: every sample stamped by `reference`."""
    return [
        msgspec.structs.replace(group, samples=reference.score_samples(group.samples)) for group in groups
    ]


def test_actor_stamps_are_what_the_learner_would_compute_and_spare_its_forward_pass(
    tiny_arith_model: Path,
) -> None:
    groups = sampled_groups(tiny_arith_model, prompts=4, prefix="stamp")
    actor_side = ReferenceModel(tiny_arith_model)
    pushed = stamped(groups, actor_side)
    assert all(
        s.ref_model == actor_side.identity and s.ref_logprob is not None for g in pushed for s in g.samples
    )
    # Through the wire, as the buffer carries them.
    arrived = [ScoredGroup.from_bytes(group.to_bytes()) for group in pushed]
    learner_side = ReferenceModel(tiny_arith_model)
    assert learner_side.identity == actor_side.identity
    batch = build_train_batch(arrived, pad_token_id=0, reference_model=learner_side.identity)
    taken = learner_side.logprobs(batch, row_keys(batch))
    assert (learner_side.misses, learner_side.provided) == (0, len(taken))  # no forward pass
    computed = ReferenceModel(tiny_arith_model)
    plain = build_train_batch(groups, pad_token_id=0)
    assert plain.reference_logprobs is None
    expected = computed.logprobs(plain, row_keys(plain))
    assert computed.misses == len(expected)
    # One function computes both; only the padding of the rows around each differs.
    assert torch.allclose(taken, expected, atol=1e-4, rtol=0)


def test_a_stamp_by_another_reference_or_none_is_computed_by_the_learner(
    tiny_arith_model: Path, tmp_path: Path
) -> None:
    groups = sampled_groups(tiny_arith_model, prompts=3, prefix="other")
    other = ReferenceModel(tiny_arith_model, dtype=torch.bfloat16)  # same files, another dtype
    assert other.identity != reference_identity(tiny_arith_model, torch.float32)
    learner_side = ReferenceModel(tiny_arith_model)
    mixed = stamped(groups[:2], other) + groups[2:]  # an offline-like group with no stamp at all
    batch = build_train_batch(mixed, pad_token_id=0, reference_model=learner_side.identity)
    assert batch.reference_logprobs is not None and bool(batch.reference_logprobs.isnan().all())
    learner_side.logprobs(batch, row_keys(batch))
    assert learner_side.provided == 0 and learner_side.misses == batch.input_ids.shape[0]


def test_the_identity_follows_the_files_not_the_folder(tiny_arith_model: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_arith_model, tmp_path / "elsewhere"))
    assert reference_identity(copy, torch.float32) == reference_identity(tiny_arith_model, torch.float32)
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # the last byte of the weights
    weights.write_bytes(bytes(data))
    assert reference_identity(copy, torch.float32) != reference_identity(tiny_arith_model, torch.float32)
