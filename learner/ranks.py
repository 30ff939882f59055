"""Data-parallel learner ranks as Ray actors joined in one torch.distributed group (gloo on CPU, NCCL
on GPUs). Ray only places the processes, gives them RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT and
collects results; every rank then runs the same loop (run.py) a torchrun launch would run.

How a batch reaches the ranks: rank 0 samples it from the buffer and broadcasts it over the group
(data_parallel.share_groups); the driver does not slice batches and send each rank its part. Why:
- the buffer keeps ONE consumer, rank 0, so the Redis consumer group's exactly-once delivery, its
  pending list and recover-after-crash work unchanged under one stable consumer name;
- every rank needs the global batch anyway: each evaluates the loss of the WHOLE batch so the
  gradient is the global one whatever the split (data_parallel.py), and plans every rank's
  micro-batches to keep their backward passes in step;
- the batch travels once, over the backend that carries the gradients, instead of buffer -> driver
  -> object store -> each rank, and the driver does nothing per step;
- a stop request rides on the same broadcast, so the ranks never disagree about the next step.

A rank that fails takes the group down: the others would wait forever in the next collective, so the
driver kills every rank and re-raises the first error.
"""

import json
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
import torch

from core.config import TandemConfig
from core.schemas import ScoredGroup
from core.weight_sync import PublishedWeights, WeightManifest, decode_weights, encode_weights

if TYPE_CHECKING:  # the real import waits: learner.checkpoint imports DeepSpeed
    from learner.checkpoint import LearnerState

MetricsSink = Callable[[dict[str, Any]], None]
POLL_S = 0.5  # how often the driver forwards metrics and asks `should_stop` while the ranks train


def join_ray(address: str | None = None) -> None:
    """Join the Ray cluster at `address`, or start a local one (a standalone `tandem learn`)."""
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, namespace="tandem", log_to_driver=True)


@ray.remote(max_restarts=0, max_concurrency=2)  # a second slot answers the driver during `run`
class LearnerRank:
    """One rank. DeepSpeed and the model are imported in `setup`, after the environment that selects
    the accelerator is in place."""

    def __init__(self, config_json: str, rank: int, world: int):
        self.config = TandemConfig.model_validate_json(config_json)
        self.rank, self.world = rank, world
        self.stop_requested = threading.Event()
        self.records: list[dict[str, Any]] = []  # rank 0's metrics, until the driver drains them
        self.lock = threading.Lock()
        self.learner: Any = None

    def endpoint(self) -> tuple[str, int]:
        """An address and a free port on this rank's node, for the group's rendezvous (rank 0's)."""
        with socket.socket() as sock:
            sock.bind(("", 0))
            port = sock.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def setup(self, address: str, port: int, resume: bool) -> None:
        # Ray gives each rank its own device (CUDA_VISIBLE_DEVICES), which it sees as device 0.
        os.environ.update(
            RANK=str(self.rank), WORLD_SIZE=str(self.world), LOCAL_RANK="0",
            MASTER_ADDR=address, MASTER_PORT=str(port),
        )  # fmt: skip
        from core.buffer import open_buffer
        from core.weight_sync import open_publisher
        from learner.run import Learner

        config = self.config
        buffer = publisher = None
        if self.rank == 0:
            buffer = open_buffer(config.buffer, consumer="learner-0", seed=config.run.seed, shared=True)
            publisher = open_publisher(config.weight_sync, config.run)
        self.learner = Learner(config, buffer, publisher, self.record, resume=resume)

    def record(self, metrics: dict[str, Any]) -> None:
        with self.lock:
            self.records.append(metrics)

    def drain(self) -> str:
        """The metrics recorded since the last call, as a JSON list (plain data, never pickled objects)."""
        with self.lock:
            records, self.records = self.records, []
        return json.dumps(records)

    def run(self, checkpoint_at_end: bool) -> None:
        self.learner.run(should_stop=self.stop_requested.is_set, checkpoint_at_end=checkpoint_at_end)

    def request_stop(self) -> None:
        self.stop_requested.set()

    def state(self) -> dict[str, Any]:
        return asdict(self.learner.state)

    def train_on(self, payloads: list[bytes] | None) -> dict[str, Any]:
        """One optimizer step on rank 0's groups (`payloads`, msgpack bytes; None on the other ranks)."""
        from learner.data_parallel import share_groups

        groups = None if payloads is None else [ScoredGroup.from_bytes(p) for p in payloads]
        shared = share_groups(groups, self.learner.ranks, self.learner.engine.device)
        assert shared is not None, "rank 0 sends groups"
        metrics = self.learner.train(shared)
        self.learner.state.step += 1
        return metrics

    def checkpoint(self) -> str:
        return str(self.learner.checkpoint())

    def weights(self) -> tuple[str, bytes]:
        """This rank's parameters as a safetensors blob and its manifest (no pickled tensors)."""
        published = encode_weights(self.learner.engine.module.state_dict(), self.learner.state.policy_version)
        return published.manifest.to_json(), published.blob


class LearnerRanks:
    """The driver's handle on `learner.num_ranks` ranks, used like a `Learner`: built (ranks created
    and joined) in `__init__`, then `run(should_stop)`, `state`, `checkpoint()`. Rank 0 opens the
    configured buffer and weight publisher itself; its metrics come back to `sink` in this process.
    Ray must be initialised."""

    def __init__(self, config: TandemConfig, sink: MetricsSink = lambda metrics: None, resume: bool = False):
        self.sink = sink
        learner = config.learner
        options: dict[str, Any] = {"num_cpus": learner.rank_cpus, "num_gpus": learner.rank_gpus}
        if learner.rank_gpus == 0:
            # DeepSpeed picks its accelerator when first imported; without GPUs that is the CPU.
            options["runtime_env"] = {"env_vars": {"DS_ACCELERATOR": "cpu"}}
        payload = config.model_dump_json()
        self.ranks = [
            LearnerRank.options(**options).remote(payload, rank, learner.num_ranks)
            for rank in range(learner.num_ranks)
        ]
        address, port = ray.get(self.ranks[0].endpoint.remote())
        self._on_every_rank([rank.setup.remote(address, port, resume) for rank in self.ranks])
        self._forward_metrics()  # a resume reports itself

    def _on_every_rank(
        self, calls: list[ray.ObjectRef], while_waiting: Callable[[], None] = lambda: None
    ) -> list[Any]:
        """The results of one call per rank. The first failure kills the group (the other ranks would
        block in their next collective) and is re-raised."""
        waiting = list(calls)
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1, timeout=POLL_S)
            while_waiting()
            for ref in done:
                try:
                    ray.get(ref)
                except Exception:
                    self.shutdown()
                    raise
        return ray.get(calls)

    def _forward_metrics(self) -> None:
        for record in json.loads(ray.get(self.ranks[0].drain.remote())):
            if "staleness_histogram" in record:  # JSON made its integer keys strings
                record["staleness_histogram"] = {int(k): v for k, v in record["staleness_histogram"].items()}
            self.sink(record)

    def run(
        self, should_stop: Callable[[], bool] = lambda: False, checkpoint_at_end: bool = True
    ) -> "LearnerState":
        """As `Learner.run`: `should_stop` is asked here, between polls, and passed on to rank 0, which
        tells the others through its next broadcast."""
        stopping = False

        def poll() -> None:
            nonlocal stopping
            self._forward_metrics()
            if not stopping and should_stop():
                stopping = True
                ray.get(self.ranks[0].request_stop.remote())

        self._on_every_rank([rank.run.remote(checkpoint_at_end) for rank in self.ranks], poll)
        self._forward_metrics()
        return self.state

    @property
    def state(self) -> "LearnerState":
        """Rank 0's step, policy version and prompt cursor (the ones its checkpoints hold)."""
        from learner.checkpoint import LearnerState

        return LearnerState(**ray.get(self.ranks[0].state.remote()))

    def checkpoint(self) -> Path:
        return Path(self._on_every_rank([rank.checkpoint.remote() for rank in self.ranks])[0])

    def train_on(self, groups: list[ScoredGroup]) -> dict[str, Any]:
        """One optimizer step on exactly `groups`, split over the ranks; rank 0's metrics."""
        payloads = [group.to_bytes() for group in groups]
        calls = [
            rank.train_on.remote(payloads if index == 0 else None) for index, rank in enumerate(self.ranks)
        ]
        return self._on_every_rank(calls)[0]

    def weights(self, rank: int = 0) -> dict[str, torch.Tensor]:
        manifest_json, blob = ray.get(self.ranks[rank].weights.remote())
        return decode_weights(PublishedWeights(WeightManifest.from_json(manifest_json), blob))

    def shutdown(self) -> None:
        for rank in self.ranks:
            ray.kill(rank)
