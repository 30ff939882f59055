"""Wire records: msgpack round-trips, contract checks, and the padded TrainBatch collation."""

import math
import struct

import msgpack
import msgspec
import pytest
import torch

from core.schemas import Sample, SchemaError, ScoredGroup, build_train_batch


def sample(prompt_id: str = "p0", completion: tuple[int, ...] = (5, 6, 7), version: int = 3) -> Sample:
    return Sample(
        prompt_id=prompt_id,
        prompt_token_ids=[1, 2],
        completion_token_ids=list(completion),
        completion_text="x" * len(completion),
        behaviour_logprobs=[-0.5] * len(completion),
        finish_reason="stop",
        policy_version=version,
        actor_id="actor-0",
        created_at=123.5,
    )


def group(samples: list[Sample], rewards: list[float | None] | None = None) -> ScoredGroup:
    rewards = rewards if rewards is not None else [float(i) for i in range(len(samples))]
    return ScoredGroup(
        group_id=f"g-{samples[0].prompt_id}",
        prompt="1+1=",
        prompt_token_ids=[1, 2],
        samples=samples,
        rewards=rewards,
        reward_status=["ok" if r is not None else "error" for r in rewards],
        reward_details=[{"exact_match": r} if r is not None else {} for r in rewards],
        reference="2",
    )


def test_group_round_trips_through_msgpack_exactly() -> None:
    original = group([sample(completion=(9, 8)), sample(version=1)], rewards=[0.25, None])
    restored = ScoredGroup.from_bytes(original.to_bytes())
    assert restored == original
    assert list(restored.samples[0].behaviour_logprobs or []) == [-0.5, -0.5]
    assert restored.policy_version == 1  # the oldest sample decides staleness


def test_offline_samples_without_logprobs_round_trip() -> None:
    offline = Sample("p0", [1], [2, 3], "ab", None, "offline", 0, "ingest", 1.0)
    restored = ScoredGroup.from_bytes(group([offline, offline]).to_bytes())
    assert restored.samples[0].behaviour_logprobs is None


def test_contract_violations_are_named() -> None:
    with pytest.raises(SchemaError, match="2 behaviour_logprobs for 3 completion tokens"):
        Sample("p", [1], [1, 2, 3], "abc", [0.0, 0.0], "stop", 0, "a")
    with pytest.raises(SchemaError, match="'ok' with reward nan"):
        group([sample()], rewards=[math.nan])
    with pytest.raises(SchemaError, match="1 rewards for 2 samples"):
        ScoredGroup("g", "p", [1], [sample(), sample()], [1.0], ["ok"], [{}])
    with pytest.raises(SchemaError, match="samples of several prompts"):
        group([sample("a"), sample("b")])
    with pytest.raises(SchemaError, match="failed \\(error\\) but has a reward"):
        ScoredGroup("g", "p", [1], [sample()], [0.0], ["error"], [{}])


def v1_map(original: ScoredGroup) -> dict:
    """The v1 wire layout written out by hand: msgpack maps, arrays as little-endian bytes."""
    return {
        "v": 1, "group_id": original.group_id, "prompt": original.prompt,
        "prompt_token_ids": struct.pack("<2i", 1, 2),
        "samples": [
            {
                "prompt_id": s.prompt_id,
                "prompt_token_ids": struct.pack(f"<{len(s.prompt_token_ids)}i", *s.prompt_token_ids),
                "completion_token_ids": struct.pack(
                    f"<{len(s.completion_token_ids)}i", *s.completion_token_ids
                ),
                "completion_text": s.completion_text,
                "behaviour_logprobs": struct.pack(
                    f"<{len(s.behaviour_logprobs or [])}d", *(s.behaviour_logprobs or [])
                ),
                "finish_reason": s.finish_reason, "policy_version": s.policy_version,
                "actor_id": s.actor_id, "created_at": s.created_at,
            }
            for s in original.samples
        ],
        "rewards": original.rewards, "reward_status": original.reward_status,
        "reward_details": original.reward_details, "source": original.source,
        "reference": original.reference, "created_at": original.created_at,
    }  # fmt: skip


def test_the_wire_format_is_v1_byte_for_byte() -> None:
    # Groups already in a Redis or an offline file of an earlier build must still decode, and the other
    # way round: the msgspec codec writes exactly what msgpack-python wrote for the v1 maps.
    original = group([sample(completion=(9, 8)), sample(version=1)], rewards=[0.25, None])
    written_before = msgpack.packb(v1_map(original), use_bin_type=True)
    assert original.to_bytes() == written_before
    assert ScoredGroup.from_bytes(written_before) == original
    reordered = dict(reversed(v1_map(original).items()))  # a map's key order is not part of the format
    assert ScoredGroup.from_bytes(msgpack.packb(reordered, use_bin_type=True)) == original


def test_a_reference_stamp_travels_and_leaves_the_v1_fields_as_they_were() -> None:
    # `ref_logprob`/`ref_model` (model.reference_on: actors) go on the wire only when set: a build
    # that predates them reads the v1 fields unchanged and skips the two keys it does not know.
    original = group([sample(completion=(9, 8)), sample(version=1)], rewards=[0.25, None])
    stamped = msgspec.structs.replace(
        original,
        samples=[
            msgspec.structs.replace(s, ref_logprob=-1.5 - i, ref_model="ab12")
            for i, s in enumerate(original.samples)
        ],
    )
    decoded = ScoredGroup.from_bytes(stamped.to_bytes())
    assert decoded == stamped and [s.ref_logprob for s in decoded.samples] == [-1.5, -2.5]
    fields = msgpack.unpackb(stamped.to_bytes(), raw=False)
    for sample_map in fields["samples"]:
        assert (sample_map.pop("ref_logprob"), sample_map.pop("ref_model"))[1] == "ab12"
    assert fields == msgpack.unpackb(msgpack.packb(v1_map(original), use_bin_type=True), raw=False)
    with pytest.raises(SchemaError, match="ref_logprob and ref_model come together"):
        msgspec.structs.replace(original.samples[0], ref_logprob=-1.0)
    with pytest.raises(SchemaError, match="ref_logprob nan"):
        msgspec.structs.replace(original.samples[0], ref_logprob=float("nan"), ref_model="ab12")


def test_a_batch_takes_stamps_of_the_named_reference_only() -> None:
    stamp = {"ref_logprob": -3.0, "ref_model": "mine"}
    samples = [
        msgspec.structs.replace(sample(), **stamp),
        msgspec.structs.replace(sample(), ref_logprob=-4.0, ref_model="theirs"),
        sample(),
    ]
    batch = build_train_batch([group(samples)], pad_token_id=0, reference_model="mine")
    assert batch.reference_logprobs is not None
    assert batch.reference_logprobs[0] == -3.0 and bool(batch.reference_logprobs[1:].isnan().all())
    assert build_train_batch([group(samples)], pad_token_id=0).reference_logprobs is None


def test_a_mistyped_field_is_named() -> None:
    wire = v1_map(group([sample()]))
    wire["samples"][0]["policy_version"] = "7"
    with pytest.raises(
        SchemaError, match=r"mistypes a field: Expected `int`, got `str` - at `\$.samples\[0\]"
    ):
        ScoredGroup.from_bytes(msgpack.packb(wire, use_bin_type=True))
    wire = v1_map(group([sample()]))
    wire["samples"][0]["completion_token_ids"] = b"\x01\x00\x00"  # 3 bytes: not whole int32s
    with pytest.raises(SchemaError, match="not a whole number"):
        ScoredGroup.from_bytes(msgpack.packb(wire, use_bin_type=True))


def test_garbage_payloads_fail_clearly_and_never_execute() -> None:
    with pytest.raises(SchemaError, match="undecodable"):
        ScoredGroup.from_bytes(b"\xc1\xc1\xc1")
    with pytest.raises(SchemaError, match="wire version"):
        ScoredGroup.from_bytes(msgpack.packb({"v": 99}))
    with pytest.raises(SchemaError, match="missing or mistypes"):
        ScoredGroup.from_bytes(msgpack.packb({"v": 1, "group_id": "g"}))
    pickled = b"\x80\x04\x95\x1d\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94."
    with pytest.raises(SchemaError):
        ScoredGroup.from_bytes(pickled)


def test_train_batch_pads_and_masks_completion_tokens() -> None:
    g0 = group([sample("a", (5, 6, 7), version=2), sample("a", (5,), version=2)], rewards=[1.0, 0.0])
    g1 = group([sample("b", (8, 9), version=4), sample("b", (4, 4), version=3)], rewards=[0.5, 0.25])
    batch = build_train_batch([g0, g1], pad_token_id=0)
    # Rows are prompt [1, 2] + completion, right-padded to the longest (2 + 3 = 5).
    assert batch.input_ids.tolist()[0] == [1, 2, 5, 6, 7]
    assert batch.input_ids.tolist()[1] == [1, 2, 5, 0, 0]
    assert batch.completion_mask.tolist()[1] == [False, False, True, False, False]
    assert batch.attention_mask.sum().item() == 5 + 3 + 4 + 4
    assert batch.group_index.tolist() == [0, 0, 1, 1]
    assert batch.policy_versions.tolist() == [2, 2, 4, 3]
    assert batch.completion_lengths.tolist() == [3, 1, 2, 2]
    assert torch.allclose(batch.behaviour_logprobs, torch.tensor([-1.5, -0.5, -1.0, -1.0]))
    assert batch.rewards.tolist() == [1.0, 0.0, 0.5, 0.25]
    assert batch.group_ids == ["g-a", "g-b"]


def test_train_batch_refuses_unscored_groups() -> None:
    with pytest.raises(SchemaError, match="unscored"):
        build_train_batch([group([sample(), sample()], rewards=[1.0, None])], pad_token_id=0)


def test_numeric_fields_are_compact_arrays_whatever_was_passed() -> None:
    from array import array

    built = sample(completion=(5, 6))
    assert isinstance(built.completion_token_ids, array) and built.completion_token_ids.typecode == "i"
    assert isinstance(built.behaviour_logprobs, array) and built.behaviour_logprobs.typecode == "d"
    ids, completion = array("i", [1, 2]), array("i", [5, 6])
    same = Sample("p0", ids, completion, "xx", [-0.5, -0.5], "stop", 3, "actor-0", 123.5)
    assert built == same
