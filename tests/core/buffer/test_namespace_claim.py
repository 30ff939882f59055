"""A fresh run refuses a buffer namespace a previous run's learner used (it would train on that run's
groups) and names `tandem buffer clear NAMESPACE`; `--resume` takes the namespace over; offline data
ingested before a fresh run, and fresh groups put by actors started before the learner, are allowed."""

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from buffer_support import SHARED_REDIS, BufferFactory, make_group

from core.buffer.protocol import ExperienceBuffer, NamespaceInUseError
from core.buffer.redis_buffer import RedisBuffer
from core.config.buffer import BufferConfig
from services.cli import main


def used_by_a_learner(buffer: ExperienceBuffer) -> None:
    """What a run leaves behind: its claim, and groups sampled, acked and replayable."""
    buffer.claim_namespace(resume=False, owner="run old (runs/old)")
    buffer.put([make_group("old-1"), make_group("old-2")])
    batch = buffer.sample(1, learner_version=0, on_policy_only=True)
    buffer.ack(batch.delivery_ids)


# One buffer per test: the memory buffer (in-process or behind its Ray actor) is one object per run.
def test_a_fresh_run_refuses_a_namespace_a_previous_run_used(new_buffer: BufferFactory) -> None:
    buffer = new_buffer()
    used_by_a_learner(buffer)
    with pytest.raises(NamespaceInUseError) as refused:
        buffer.claim_namespace(resume=False, owner="run new (runs/new)")
    message = str(refused.value)
    assert "run old (runs/old)" in message and "--resume" in message


def test_a_resumed_run_takes_the_namespace_over(new_buffer: BufferFactory) -> None:
    buffer = new_buffer()
    used_by_a_learner(buffer)
    buffer.claim_namespace(resume=True, owner="run old (runs/old)")  # no error
    buffer.claim_namespace(resume=True, owner="run old (runs/old)")  # and again after another crash


def test_a_fresh_run_on_an_unused_namespace_claims_it(new_buffer: BufferFactory) -> None:
    buffer = new_buffer()
    buffer.claim_namespace(resume=False, owner="run a")
    with pytest.raises(NamespaceInUseError):  # a second fresh run on the same namespace
        buffer.claim_namespace(resume=False, owner="run b")


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"tandem-claim-{uuid.uuid4().hex[:8]}"
    yield name
    RedisBuffer(BufferConfig(kind="redis", namespace=name)).delete_all()


def redis_buffer(namespace: str) -> RedisBuffer:
    return RedisBuffer(BufferConfig(kind="redis", redis_url=SHARED_REDIS, namespace=namespace))


def test_offline_data_and_groups_of_actors_started_first_do_not_count(namespace: str) -> None:
    ingest = redis_buffer(namespace)
    ingest.put_offline([make_group("offline-1"), make_group("offline-2")])  # `tandem ingest` before the run
    redis_buffer(namespace).put([make_group("from-an-actor")])  # an actor that started before the learner
    learner = redis_buffer(namespace)
    learner.claim_namespace(resume=False, owner="run fresh")
    marker = json.loads(learner.client.get(f"{namespace}:run"))
    assert marker["owner"] == "run fresh" and marker["resume"] is False


def test_the_refusal_names_the_clear_command_which_keeps_offline_data(
    namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    previous = redis_buffer(namespace)
    previous.put_offline([make_group("offline")])
    previous.claim_namespace(resume=False, owner="run old")
    previous.put([make_group("old")])
    previous.set_learner_version(3)
    with pytest.raises(NamespaceInUseError) as refused:
        redis_buffer(namespace).claim_namespace(resume=False, owner="run new")
    assert f"`tandem buffer clear {namespace}`" in str(refused.value)
    assert "learner version 3" in str(refused.value) and "run old" in str(refused.value)

    assert main(["buffer", "clear", namespace, "--redis-url", SHARED_REDIS]) == 0
    assert "offline pool kept" in capsys.readouterr().out
    after = redis_buffer(namespace)
    after.claim_namespace(resume=False, owner="run new")  # now allowed
    stats = after.stats()
    assert (stats.offline_size, stats.depth, stats.replay_size, stats.learner_version) == (1, 0, 0, 0)

    assert main(["buffer", "clear", namespace, "--all", "--redis-url", SHARED_REDIS]) == 0
    assert redis_buffer(namespace).stats().offline_size == 0


def test_tandem_learn_claims_before_its_learner_starts(namespace: str, tmp_path: Path) -> None:
    from core.config import load_config
    from services.cli.learner_cmd import claim_namespace

    config = load_config(
        None,
        [
            "buffer.kind=redis",
            f"buffer.redis_url={SHARED_REDIS}",
            f"buffer.namespace={namespace}",
            f"run.run_dir={tmp_path / 'run'}",
        ],
        environ={},
    )
    claim_namespace(config, resume=False)
    with pytest.raises(NamespaceInUseError, match="tandem buffer clear"):
        claim_namespace(config, resume=False)
    claim_namespace(config, resume=True)
