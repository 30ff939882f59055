"""Buffer throughput: RedisBuffer put + sample + ack vs a raw redis-py pipeline moving the same bytes.

Groups of realistic size: 8 samples x 256 completion tokens with behaviour log-probs, 64 prompt
tokens (~31 KB of msgpack each). Per repetition, each side streams `--groups` groups through a fresh
namespace in batches of `--batch`:
  tandem  RedisBuffer.put (encode + dedupe-checked XADD script), sample (XREADGROUP + decode),
          ack (XACK + XDEL + push to replay script)
  raw     pipelined XADD of pre-encoded payloads, XREADGROUP, XACK; no encode, decode, dedupe or replay
The two sides alternate (and swap order every repetition) against the same Redis, so drift in a
shared machine hits both. Prints medians, spread and the ratio tandem/raw (target >= 0.5), and the
ceiling the record codec alone puts on that ratio: raw Redis time plus ScoredGroup.to_bytes +
from_bytes time (core/schemas.py), which any buffer of these records must spend.
A benchmark, not a test: nothing fails on a figure. `run(quick)` is the entry `tandem bench buffer` uses.

    .venv/bin/python benchmarks/buffer_bench.py [--redis-url URL] [--groups 1024] [--batch 16] [--repeats 7]
"""

import argparse
import statistics
import time
import uuid

import redis

from core.buffer.redis_buffer import RedisBuffer
from core.config.buffer import BufferConfig
from core.schemas import Sample, ScoredGroup

from harness import BenchResult, Comparison

REDIS_URL = "redis://127.0.0.1:6379/0"


def realistic_group(index: int) -> ScoredGroup:
    samples = [
        Sample(
            f"p{index}", list(range(64)), list(range(256)), "x" * 256, [-0.25] * 256, "length", 0, "actor-0"
        )
        for _ in range(8)
    ]
    return ScoredGroup(
        f"g{index}", "prompt " * 16, list(range(64)), samples, [1.0] * 8, ["ok"] * 8, [{"em": 1.0}] * 8
    )


def run_tandem(url: str, groups: list[ScoredGroup], batch: int) -> float:
    config = BufferConfig(
        kind="redis", redis_url=url, namespace=f"bench-{uuid.uuid4().hex[:8]}", on_policy_fraction=1.0,
        max_staleness=10, replay_capacity=len(groups), high_water=10**6,
    )  # fmt: skip
    buffer = RedisBuffer(config)
    started = time.perf_counter()
    for start in range(0, len(groups), batch):
        buffer.put(groups[start : start + batch])
    received = 0
    while received < len(groups):
        sampled = buffer.sample(batch, learner_version=0, on_policy_only=True)
        buffer.ack(sampled.delivery_ids)
        received += len(sampled.groups)
    elapsed = time.perf_counter() - started
    buffer.delete_all()
    buffer.close()
    return len(groups) / elapsed


def run_raw(url: str, payloads: list[bytes], batch: int) -> float:
    client = redis.Redis.from_url(url)
    key = f"bench-raw-{uuid.uuid4().hex[:8]}"
    client.xgroup_create(key, "g", id="0", mkstream=True)
    started = time.perf_counter()
    for start in range(0, len(payloads), batch):
        pipe = client.pipeline(transaction=False)
        for payload in payloads[start : start + batch]:
            pipe.xadd(key, {"pv": 0, "data": payload})
        pipe.execute()
    received = 0
    while received < len(payloads):
        reply = client.xreadgroup("g", "c", {key: ">"}, count=batch)
        entries = [entry for _, stream_entries in reply for entry in stream_entries]
        data = [fields[b"data"] for _, fields in entries]
        client.xack(key, "g", *[entry_id for entry_id, _ in entries])
        received += len(data)
    elapsed = time.perf_counter() - started
    client.delete(key)
    client.close()
    return len(payloads) / elapsed


def run_codec(groups: list[ScoredGroup]) -> float:
    """Encode and decode every group once, as a put and a sample must."""
    started = time.perf_counter()
    for group in groups:
        ScoredGroup.from_bytes(group.to_bytes())
    return len(groups) / (time.perf_counter() - started)


def measure(redis_url: str, groups: list[ScoredGroup], batch: int, repeats: int) -> dict[str, list[float]]:
    """Groups/s of each side per repetition, alternating (who goes first swaps every repetition)."""
    payloads = [group.to_bytes() for group in groups]  # the raw side gets pre-encoded bytes for free
    ours, raw, codec = [], [], []
    for repeat in range(repeats):
        if repeat % 2:
            raw.append(run_raw(redis_url, payloads, batch))
            ours.append(run_tandem(redis_url, groups, batch))
        else:
            ours.append(run_tandem(redis_url, groups, batch))
            raw.append(run_raw(redis_url, payloads, batch))
        codec.append(run_codec(groups))
    return {"ours": ours, "raw": raw, "codec": codec}


def codec_ceiling(series: dict[str, list[float]]) -> list[float]:
    """Per repetition, the best ratio any buffer of these records can reach: seconds per group add up,
    so raw Redis work + codec work is the fastest it can go."""
    return [1 / (1 / r + 1 / c) / r for r, c in zip(series["raw"], series["codec"], strict=True)]


def run(quick: bool) -> BenchResult:
    """The suite's entry: full sizes, or a seconds-long smoke run."""
    count, batch, repeats = (64, 16, 3) if quick else (1024, 16, 7)
    groups = [realistic_group(i) for i in range(count)]
    series = measure(REDIS_URL, groups, batch, repeats)
    ceiling = codec_ceiling(series)
    return BenchResult(
        name="buffer",
        title="Redis buffer put + sample + ack vs a raw redis-py pipeline",
        method=(
            f"{count} groups of 8 x 256 completion tokens ({len(groups[0].to_bytes())} bytes of msgpack "
            f"each) stream through each side in batches of {batch}: `RedisBuffer.put`, `sample`, `ack` "
            "(encode, dedupe-checked XADD script, XREADGROUP, decode, ack + replay script) vs pipelined "
            "XADD of pre-encoded payloads, XREADGROUP and XACK against the same Redis."
        ),
        comparisons=[
            Comparison(
                name="groups/s",
                unit="groups/s",
                ours_label="RedisBuffer put+sample+ack",
                baseline_label="raw redis-py pipeline",
                ours=series["ours"],
                baseline=series["raw"],
                target=0.5,
                miss_note=(
                    "Encoding and decoding the records alone caps the ratio at "
                    f"{statistics.median(ceiling):.2f} here (raw Redis time plus `ScoredGroup.to_bytes` + "
                    "`from_bytes` time), which the raw side skips; the rest is what makes the buffer safe "
                    "to retry and share: the MULTI/EXEC with its receipt around each put, the Lua ack, "
                    "the counters. The raw side's own cost is mostly redis-py packing and parsing, "
                    "so the ratio moves with the machine's speed against Redis's."
                ),
            ),
        ],
        figures={
            "codec encode+decode, median groups/s": statistics.median(series["codec"]),
            "codec ceiling on the ratio, median": statistics.median(ceiling),
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--groups", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    groups = [realistic_group(i) for i in range(args.groups)]
    payload = len(groups[0].to_bytes())
    print(f"group payload: {payload} bytes; {args.groups} groups per run, batches of {args.batch}")
    series = measure(args.redis_url, groups, args.batch, args.repeats)
    ours, raw, codec = series["ours"], series["raw"], series["codec"]
    ratios = [o / r for o, r in zip(ours, raw, strict=True)]
    rows = (
        ("RedisBuffer put+sample+ack", ours),
        ("raw redis-py pipeline", raw),
        ("codec: encode+decode", codec),
    )
    for label, values in rows:
        median = statistics.median(values)
        print(f"{label:28s} median {median:8.0f} groups/s  (min {min(values):.0f}, max {max(values):.0f})")
    spread = f"min {min(ratios):.2f}, max {max(ratios):.2f}"
    print(f"ratio (ours / raw): median {statistics.median(ratios):.2f} ({spread}); target >= 0.5")
    ceiling = codec_ceiling(series)
    print(f"ceiling from the codec alone (raw + encode/decode time): ratio {statistics.median(ceiling):.2f}")


if __name__ == "__main__":
    main()
