"""Helpers of the buffer tests (a module of its own: several conftest.py files share that name)."""

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import redis

from core.buffer import ExperienceBuffer
from core.schemas import Sample, ScoredGroup

SHARED_REDIS = "redis://127.0.0.1:6379/0"


def make_group(name: str, version: int = 0, samples: int = 2, tokens: int = 3) -> ScoredGroup:
    return ScoredGroup(
        group_id=name,
        prompt=f"{name}=",
        prompt_token_ids=[1, 2],
        samples=[
            Sample(
                name, [1, 2], list(range(tokens)), "x" * tokens, [-0.5] * tokens, "stop", version, "a0", 1.0
            )
            for _ in range(samples)
        ],
        rewards=[float(i) for i in range(samples)],
        reward_status=["ok"] * samples,
        reward_details=[{"exact_match": float(i)} for i in range(samples)],
        created_at=1.0,
    )


BufferFactory = Callable[..., ExperienceBuffer]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    """A redis-server of our own with AOF fsync on every write, that tests may kill -9 and restart."""

    def __init__(self, directory: Path, appendonly: str = "yes", appendfsync: str = "always"):
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.appendonly, self.appendfsync = appendonly, appendfsync  # other settings: durability tests

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
            "--appendonly", self.appendonly, "--appendfsync", self.appendfsync, "--save", "",
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=0.5).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()  # SIGKILL: no shutdown save, only what the AOF already holds survives
        self.process.wait()


class RewardServer:
    """POST /v1/score: exact match against the reference; records each request's size and Authorization."""

    def __init__(self) -> None:
        self.requests: list[int] = []
        self.authorization: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                items = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["items"]
                server.requests.append(len(items))
                server.authorization.append(self.headers.get("Authorization"))
                results = [
                    {
                        "reward": float(item["completion"] == item.get("reference")),
                        "status": "ok",
                        "scores": {"exact_match": float(item["completion"] == item.get("reference"))},
                        "error": None,
                    }
                    for item in items
                ]
                body = json.dumps({"results": results}).encode()
                self.send_response(200 if self.path == "/v1/score" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                """Quiet."""

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_port}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
