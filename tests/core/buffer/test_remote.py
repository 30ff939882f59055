"""The memory buffer served from a Ray actor, beyond the shared suite (which runs against it too):
handles by name share one buffer, and the CLI reaches it in a running cluster."""

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from buffer_support import make_group

from core.buffer import open_buffer
from core.buffer.remote import RAY_NAMESPACE, RemoteBuffer, actor_name
from core.config.buffer import BufferConfig
from services.cli import main


@pytest.fixture
def config(ray_runtime: None) -> Iterator[BufferConfig]:
    """A run of its own; its buffer actor, if a test started one, is killed afterwards."""
    config = BufferConfig(namespace=f"remote-{uuid.uuid4().hex[:8]}", on_policy_fraction=1.0, high_water=2)
    yield config
    with contextlib.suppress(ValueError):
        ray.kill(ray.get_actor(actor_name(config), namespace=RAY_NAMESPACE))


def test_handles_by_name_share_one_buffer_that_outlives_the_learner(config: BufferConfig) -> None:
    actor_side = open_buffer(config, shared=True)  # as the driver would start it for the run
    assert isinstance(actor_side, RemoteBuffer)
    assert actor_side.put([make_group("g0"), make_group("g1")]).paused is True
    learner = RemoteBuffer.connect(config)
    batch = learner.sample(2, learner_version=0, on_policy_only=True)
    assert [g.group_id for g in batch.groups] == ["g0", "g1"] and batch.groups[0] == make_group("g0")
    learner.ack(batch.delivery_ids[:1])
    # The learner died; its successor finds the same buffer by name and gets the unacked group back.
    successor = RemoteBuffer.connect(config)
    assert successor.recover() == 1
    assert [g.group_id for g in successor.sample(2, learner_version=0, on_policy_only=True).groups] == ["g1"]
    assert actor_side.stats().replay_size == 1


def test_cli_ingests_into_and_reports_on_the_running_memory_buffer(
    config: BufferConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    buffer = RemoteBuffer.start(config)
    data = tmp_path / "offline.jsonl"
    line = {"prompt": "1+1=", "completions": ["2", "3"], "rewards": [1, 0]}
    data.write_text(json.dumps({**line, "prompt_token_ids": [1], "completion_token_ids": [[2], [3]]}) + "\n")
    in_namespace = ["--set", f"buffer.namespace={config.namespace}"]
    assert main(["ingest", str(data), "--buffer", "memory", *in_namespace]) == 0
    assert "1 off-policy groups written to memory buffer actor" in capsys.readouterr().out
    assert buffer.stats().offline_size == 1
    assert main(["buffer", "stats", "--buffer", "memory", "--json", *in_namespace]) == 0
    assert json.loads(capsys.readouterr().out)["counters"]["put_offline"] == 1


def test_cli_names_the_missing_actor(ray_runtime: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["buffer", "stats", "--buffer", "memory", "--set", "buffer.namespace=no-such-run"]) == 2
    assert "no buffer actor 'buffer:no-such-run' in Ray namespace 'tandem'" in capsys.readouterr().err


def test_the_buffer_actor_runs_on_the_cpus_it_was_started_with(config: BufferConfig) -> None:
    """The driver starts it on the actors' CPUs in a split layout; a later handle keeps them."""
    cpu = min(os.sched_getaffinity(0))
    buffer = open_buffer(config, shared=True, cpus=[cpu])
    assert isinstance(buffer, RemoteBuffer) and buffer.cpus() == [cpu]
    assert RemoteBuffer.start(config, cpus=None).cpus() == [cpu]  # the existing actor, unchanged
