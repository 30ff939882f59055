"""Buffer throughput: RedisBuffer put + sample + ack vs a raw redis-py pipeline moving the same bytes.

Groups of realistic size (8 samples x 256 completion tokens with behaviour log-probs, 64 prompt
tokens). Both sides run alternately in one process against the same Redis, several repetitions;
prints medians, spread and the ratio (target >= 0.5). A benchmark, not a test: nothing fails on a figure.

    .venv/bin/python benchmarks/buffer_bench.py [--redis-url URL] [--groups 256] [--repeats 5]
"""

import argparse
import statistics
import time
import uuid

import redis

from services.buffer.redis_buffer import RedisBuffer
from services.config.buffer import BufferConfig
from services.schemas import Sample, ScoredGroup


def realistic_group(index: int) -> ScoredGroup:
    samples = [
        Sample(
            f"p{index}",
            list(range(64)),
            list(range(256)),
            "x" * 256,
            [-0.25] * 256,
            "length",
            0,
            "actor-0",
            1.0,
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
    for _ in range(0, len(groups), batch):
        sampled = buffer.sample(batch, learner_version=0, on_policy_only=True)
        buffer.ack(sampled.delivery_ids)
    elapsed = time.perf_counter() - started
    buffer.delete_all()
    return len(groups) / elapsed


def run_raw(url: str, payloads: list[bytes], batch: int) -> float:
    client = redis.Redis.from_url(url)
    key = f"bench-raw-{uuid.uuid4().hex[:8]}"
    client.xgroup_create(key, "g", id="0", mkstream=True)
    started = time.perf_counter()
    for start in range(0, len(payloads), batch):
        pipe = client.pipeline(transaction=True)
        for payload in payloads[start : start + batch]:
            pipe.xadd(key, {"pv": 0, "data": payload})
        pipe.execute()
    for _ in range(0, len(payloads), batch):
        reply = client.xreadgroup("g", "c", {key: ">"}, count=batch)
        ids = [entry_id for _, entries in reply for entry_id, _ in entries]
        data = [fields[b"data"] for _, entries in reply for _, fields in entries]
        pipe = client.pipeline(transaction=True)
        pipe.xack(key, "g", *ids)
        pipe.xdel(key, *ids)
        pipe.lpush(key + ":replay", *data)
        pipe.execute()
    elapsed = time.perf_counter() - started
    client.delete(key, key + ":replay")
    return len(payloads) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--groups", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    groups = [realistic_group(i) for i in range(args.groups)]
    payloads = [group.to_bytes() for group in groups]  # the raw side gets pre-encoded bytes for free
    print(f"group payload: {len(payloads[0])} bytes; {args.groups} groups, batches of {args.batch}")
    ours, raw = [], []
    for _ in range(args.repeats):
        ours.append(run_tandem(args.redis_url, groups, args.batch))
        raw.append(run_raw(args.redis_url, payloads, args.batch))
    ratios = [o / r for o, r in zip(ours, raw, strict=True)]
    for label, values in (("RedisBuffer put+sample+ack", ours), ("raw redis-py pipeline", raw)):
        median = statistics.median(values)
        print(f"{label:28s} median {median:8.0f} groups/s  (min {min(values):.0f}, max {max(values):.0f})")
    spread = f"min {min(ratios):.2f}, max {max(ratios):.2f}"
    print(f"ratio (ours / raw): median {statistics.median(ratios):.2f} ({spread}); target >= 0.5")


if __name__ == "__main__":
    main()
