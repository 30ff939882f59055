"""An ASGI app served by uvicorn on a thread of this process, on a free loopback port by default.

The driver uses it for the embedded reward server (`reward.url` unset), and tests and benchmarks for
real HTTP servers; Ray workers on the same machine reach it like any other server.
"""

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serve(app: object, port: int | None = None, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `app` until the block ends; yields its base URL once it accepts connections."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on port {port}")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
