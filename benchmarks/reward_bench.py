"""Reward-server throughput: items/s of POST /v1/score (exact_match) vs a bare FastAPI app of constants.

Two servers run side by side, each in its own process under identical uvicorn settings (one worker,
access log off), so the ratio is the cost of the app itself:
  tandem  `create_app` with one exact_match scorer (the demo's): body-size middleware, the request
          decoded and limit-checked by msgspec, scoring, per-scorer metrics, the encoded response
  bare    one FastAPI route that takes the JSON body as a dict and returns a constant dict of the same
          shape (one result per item); no validation, no scoring
The load generator keeps `--concurrency` keep-alive connections busy with the same pre-encoded request
(`--items` arithmetic items) for `--seconds`, over a minimal HTTP/1.1 client, so the client costs far
less than either server. Repetitions alternate the two servers and swap which goes first, so drift on
a shared machine hits both. Prints per-repetition figures, medians and the ratio tandem/bare
(target >= 0.8). A benchmark, not a test: nothing fails on a figure; `tandem bench reward` calls
`run(quick)`.

    .venv/bin/python benchmarks/reward_bench.py [--items 64] [--concurrency 16] [--seconds 3] [--repeats 5]
"""

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from harness import BenchResult, Comparison

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def request_items(count: int) -> list[dict[str, Any]]:
    """Arithmetic items as actors send them: half right, half wrong."""
    return [
        {"prompt": f"{a}+{a + 1}=", "completion": str(2 * a + 1 + a % 2), "reference": str(2 * a + 1)}
        for a in range(10, 10 + count)
    ]


def tandem_app() -> Any:
    from core.config.reward import ExactMatchScorerConfig, RewardConfig
    from reward_server.app import create_app

    scorer = ExactMatchScorerConfig(name="exact_match", pattern=r"^\s*(-?\d+)", numeric_tolerance=0)
    return create_app(RewardConfig(scorers=[scorer]))


def bare_app() -> Any:
    from fastapi import FastAPI

    app = FastAPI()
    result = {"reward": 1.0, "status": "ok", "scores": {"exact_match": 1.0}, "error": None}

    @app.post("/v1/score")
    async def score(body: dict[str, Any]) -> dict[str, Any]:
        return {"results": [result] * len(body["items"]), "server_version": "0", "config_hash": "0"}

    return app


def serve(kind: str, port: int) -> None:
    import uvicorn

    app = tandem_app() if kind == "tandem" else bare_app()
    uvicorn.run(app, host=HOST, port=port, log_level="warning", access_log=False)


def start_server(kind: str) -> tuple[subprocess.Popen[bytes], int]:
    from services.embedded_server import free_port

    port = free_port()
    command = [sys.executable, __file__, "--serve", kind, "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{HOST}:{port}/docs").status_code == 200:
                return process, port
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{kind} server did not start on port {port}")


def check_answer(port: int, body: bytes, items: int) -> None:
    """One request through a full HTTP client: the server answers 200 with one result per item."""
    headers = {"content-type": "application/json"}
    response = httpx.post(f"http://{HOST}:{port}/v1/score", content=body, headers=headers)
    results = response.json()["results"]
    assert response.status_code == 200 and len(results) == items, response.text[:300]


async def keep_busy(port: int, request: bytes, until: float) -> int:
    """Send `request` back to back on one keep-alive connection until `until`; the requests answered."""
    reader, writer = await asyncio.open_connection(HOST, port)
    answered = 0
    try:
        while time.perf_counter() < until:
            writer.write(request)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            if not status.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"server answered {status!r}")
            answered += 1
    finally:
        writer.close()
    return answered


async def measure(port: int, body: bytes, concurrency: int, seconds: float) -> float:
    """Requests per second with `concurrency` connections kept busy for `seconds`."""
    head = f"POST /v1/score HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
    request = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    started = time.perf_counter()
    counts = await asyncio.gather(*(keep_busy(port, request, started + seconds) for _ in range(concurrency)))
    return sum(counts) / (time.perf_counter() - started)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=64, help="items per request")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one measurement")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--serve", choices=["tandem", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    report(measure_servers(args), args)


def measure_servers(args: argparse.Namespace) -> dict[str, list[float]]:
    """Start both servers, alternate the load between them, stop them; items/s per repetition."""
    body = json.dumps({"items": request_items(args.items)}).encode()
    servers = {kind: start_server(kind) for kind in ("tandem", "bare")}
    try:
        rates = alternate(servers, body, args)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=30)
    return rates


def run(quick: bool) -> BenchResult:
    """The suite's entry: the CLI's defaults, or one-second measurements for a smoke run."""
    args = parse_args(["--seconds", "1", "--repeats", "3"] if quick else ["--repeats", "7"])
    rates = measure_servers(args)
    return BenchResult(
        name="reward",
        title="reward server /v1/score vs a bare FastAPI app",
        method=(
            f"Requests of {args.items} arithmetic items, {args.concurrency} keep-alive connections kept busy "
            f"for {args.seconds:g} s per repetition, against two uvicorn servers in their own processes (one "
            "worker each, access log off): `create_app` with the demo's exact_match scorer (size limits, "
            "decoding, scoring, metrics) vs one FastAPI route returning a constant of the same shape."
        ),
        comparisons=[
            Comparison(
                name="items/s",
                unit="items/s",
                ours_label="tandem /v1/score (exact_match)",
                baseline_label="bare FastAPI (constants)",
                ours=rates["tandem"],
                baseline=rates["bare"],
                target=0.8,
                miss_note=(
                    "The bare app only parses JSON and returns a constant. Tandem's /v1/score already "
                    "decodes and encodes with msgspec, checks limits while decoding and skips FastAPI's "
                    "dependency solving (reward_server/wire.py, routes/direct.py); what is left is the "
                    "exact-match work itself, about a microsecond per item (regex, two float parses, a "
                    "result per item), which a constant response does not do."
                ),
            )
        ],
    )


def alternate(
    servers: dict[str, tuple[subprocess.Popen[bytes], int]], body: bytes, args: argparse.Namespace
) -> dict[str, list[float]]:
    """Items/s of each server per repetition, the two measured in turn (who goes first alternates)."""
    for _, port in servers.values():
        check_answer(port, body, args.items)
        asyncio.run(measure(port, body, args.concurrency, 1.0))  # warm-up
    rates: dict[str, list[float]] = {"tandem": [], "bare": []}
    for repeat in range(args.repeats):
        for kind in ("tandem", "bare") if repeat % 2 == 0 else ("bare", "tandem"):
            per_second = asyncio.run(measure(servers[kind][1], body, args.concurrency, args.seconds))
            rates[kind].append(per_second * args.items)
        tandem, bare = rates["tandem"][-1], rates["bare"][-1]
        print(f"repeat {repeat}: tandem {tandem:9.0f} items/s   bare {bare:9.0f} items/s", flush=True)
    return rates


def report(rates: dict[str, list[float]], args: argparse.Namespace) -> None:
    print(f"\n{args.items} items/request, {args.concurrency} in flight, {args.repeats} x {args.seconds:g} s")
    for kind, label in (("tandem", "tandem /v1/score (exact_match)"), ("bare", "bare FastAPI (constants)")):
        median, low, high = statistics.median(rates[kind]), min(rates[kind]), max(rates[kind])
        print(f"{label:31s} median {median:9.0f} items/s (min {low:.0f}, max {high:.0f})")
    ratio = statistics.median(rates["tandem"]) / statistics.median(rates["bare"])
    print(f"ratio tandem/bare: {ratio:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
