"""`buffer.durability` against real redis-servers: `always` keeps a put through `kill -9` of Redis
right after it returned, and refuses to start, naming what to set, on a server that cannot promise
it; `everysec` needs the append-only file; `none` checks nothing. The WAITAOF path (Redis >= 7.2) is
checked through the plan and with a scripted connection, so the test passes on any server version."""

import json
from pathlib import Path
from typing import Any

import pydantic
import pytest
import redis
import yaml
from buffer_support import SHARED_REDIS, PrivateRedis, make_group

from core.buffer.protocol import DurabilityError, UnconfirmedPutError
from core.buffer.redis_buffer import RedisBuffer, durability_plan
from core.config.buffer import BufferConfig

ROOT = Path(__file__).resolve().parents[3]


def config(url: str, durability: str, namespace: str = "durable") -> BufferConfig:
    return BufferConfig(kind="redis", redis_url=url, namespace=namespace, durability=durability)


def server_version(url: str) -> tuple[int, int]:
    major, minor, *_ = str(redis.Redis.from_url(url).info("server")["redis_version"]).split(".")
    return int(major), int(minor)


def started(tmp_path: Path, appendonly: str, appendfsync: str = "everysec") -> PrivateRedis:
    server = PrivateRedis(tmp_path, appendonly=appendonly, appendfsync=appendfsync)
    server.start()
    return server


def test_always_keeps_a_put_through_kill_9_of_redis_right_after_it_returned(tmp_path: Path) -> None:
    server = started(tmp_path, appendonly="yes", appendfsync="always")
    try:
        buffer = RedisBuffer(config(server.url, "always"), consumer="actor")
        assert buffer.durability == "server"  # Redis fsyncs the AOF before it replies
        assert buffer.put([make_group("acknowledged")]).accepted == 1
        server.kill()  # SIGKILL the moment the put returned: no shutdown, no final save
        server.start()  # same directory: Redis rebuilds from the AOF
        reopened = RedisBuffer(config(server.url, "always"), consumer="learner-0")
        batch = reopened.sample(1, learner_version=0, on_policy_only=True)
        assert [group.group_id for group in batch.groups] == ["acknowledged"]
    finally:
        server.kill()


def test_always_refuses_to_start_on_a_server_without_aof(tmp_path: Path) -> None:
    server = started(tmp_path, appendonly="no")
    try:
        with pytest.raises(DurabilityError) as refused:
            RedisBuffer(config(server.url, "always"))
        message = str(refused.value)
        assert "buffer.durability=always" in message and "appendonly=no" in message
        assert "--appendonly yes --appendfsync always" in message  # what to set, spelt out
        assert f"127.0.0.1:{server.port}" in message
        RedisBuffer(config(server.url, "none")).put([make_group("unchecked")])  # `none` checks nothing
    finally:
        server.kill()


def test_always_on_everysec_needs_waitaof_and_everysec_is_accepted(tmp_path: Path) -> None:
    server = started(tmp_path, appendonly="yes", appendfsync="everysec")
    try:
        assert RedisBuffer(config(server.url, "everysec")).durability == "server"
        if server_version(server.url) >= (7, 2):
            assert RedisBuffer(config(server.url, "always")).durability == "waitaof"
        else:  # Redis 7.0 has no WAITAOF and does not fsync before replying on everysec
            with pytest.raises(DurabilityError, match=r"Redis >= 7\.2 \(WAITAOF\) or appendfsync always"):
                RedisBuffer(config(server.url, "always"))
    finally:
        server.kill()


def test_everysec_refuses_a_server_without_aof(tmp_path: Path) -> None:
    server = started(tmp_path, appendonly="no")
    try:
        with pytest.raises(DurabilityError, match="--appendonly yes --appendfsync everysec"):
            RedisBuffer(config(server.url, "everysec"))
    finally:
        server.kill()


@pytest.mark.parametrize(
    ("mode", "version", "appendonly", "appendfsync", "plan"),
    [
        ("none", (6, 0), False, "no", "none"),
        ("always", (7, 0), True, "always", "server"),
        ("always", (7, 2), True, "everysec", "waitaof"),
        ("always", (8, 0), True, "no", "waitaof"),
        ("always", (7, 2), True, None, "waitaof"),  # CONFIG refused: WAITAOF needs no fsync policy
        ("everysec", (7, 0), True, "always", "server"),
        ("everysec", (7, 4), True, "everysec", "server"),
    ],
)
def test_the_plan_for_each_server(
    mode: str, version: tuple[int, int], appendonly: bool, appendfsync: str | None, plan: str
) -> None:
    assert durability_plan(mode, version, appendonly, appendfsync, "server") == plan


@pytest.mark.parametrize(
    ("mode", "version", "appendonly", "appendfsync", "names"),
    [
        ("always", (7, 0), True, "everysec", "appendfsync always"),
        ("always", (7, 0), True, None, "appendfsync always"),
        ("always", (7, 2), False, "always", "--appendonly yes"),
        ("everysec", (7, 2), True, "no", "--appendfsync everysec"),
    ],
)
def test_the_plan_refuses_what_the_server_cannot_promise(
    mode: str, version: tuple[int, int], appendonly: bool, appendfsync: str | None, names: str
) -> None:
    with pytest.raises(DurabilityError, match=names):
        durability_plan(mode, version, appendonly, appendfsync, "server")


class ScriptedPipeline:
    """Records the commands of the WAITAOF pipeline and answers WAITAOF with `local` fsynced AOFs."""

    def __init__(self, sent: list[tuple], local: int) -> None:
        self.sent, self.local = sent, local

    def set(self, *args: Any, **kwargs: Any) -> None:
        self.sent.append(("SET", *args))

    def execute_command(self, *args: Any) -> None:
        self.sent.append(args)

    def execute(self) -> list:
        return [True, [self.local, 0]]


def test_with_waitaof_each_put_waits_for_the_fsync_and_an_unconfirmed_one_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    buffer = RedisBuffer(config(SHARED_REDIS, "none", namespace="tandem-test-waitaof"))
    try:
        buffer.durability = "waitaof"  # as a Redis >= 7.2 server without appendfsync always gets
        sent: list[tuple] = []
        real = buffer.writer.pipeline

        def scripted(local: int) -> Any:
            # The put's MULTI/EXEC goes to Redis; the non-transactional WAITAOF pipeline is scripted.
            return lambda transaction=True: (
                real(transaction=True) if transaction else ScriptedPipeline(sent, local)
            )

        monkeypatch.setattr(buffer.writer, "pipeline", scripted(1))
        buffer.put([make_group("fsynced")])
        # A write on the same connection, then WAITAOF 1 local fsync, 0 replicas, with a timeout.
        assert sent[0][0] == "SET" and sent[0][1].startswith("tandem-test-waitaof:put:")
        assert sent[1][:3] == ("WAITAOF", 1, 0)
        buffer.put_offline([make_group("offline")])
        assert [command[0] for command in sent] == ["SET", "WAITAOF", "SET", "WAITAOF"]

        monkeypatch.setattr(buffer.writer, "pipeline", scripted(0))
        with pytest.raises(UnconfirmedPutError, match="did not confirm the AOF fsync"):
            buffer.put([make_group("not on disk")])
    finally:
        buffer.delete_all()
        buffer.close()


def test_only_redis_can_promise_durability() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"needs buffer\.kind=redis"):
        BufferConfig(kind="memory", durability="always")


def test_compose_runs_redis_and_the_trainer_with_always() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "always"
    trainer_env = compose["services"]["trainer"]["environment"]
    assert trainer_env["TANDEM_BUFFER__DURABILITY"] == "always"


def test_the_command_line_refuses_with_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.cli import main

    server = started(tmp_path, appendonly="no")
    data = tmp_path / "offline.jsonl"
    line = {"prompt": "a", "completions": ["x", "y"], "rewards": [0, 1], "prompt_token_ids": [1]}
    data.write_text(json.dumps({**line, "completion_token_ids": [[2], [3]]}) + "\n")
    try:
        args = ["ingest", str(data), "--redis-url", server.url, "--set", "buffer.durability=always"]
        assert main([*args, "--set", "buffer.kind=redis"]) == 2
        err = capsys.readouterr().err
        assert "buffer.durability=always needs the append-only file" in err and "Traceback" not in err
    finally:
        server.kill()
