"""A two-rank torch.distributed group between the learner (rank 0) and one receiver (rank 1).

The group is built directly from a `PrefixStore` over the learner's `TCPStore`, never with
`init_process_group`: the learner's DeepSpeed ranks and vLLM's workers each already own the default
process group, and a second `init_process_group` would replace or break it. The same code runs gloo on
CPU and NCCL on CUDA; which one is chosen by the sender's device and announced in the rendezvous, so
both ends always agree. Only the gloo path can be exercised on a CPU machine.
"""

import contextlib
import datetime
from dataclasses import dataclass

import torch
import torch.distributed as dist


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def device_for(backend: str) -> torch.device:
    """Where a receiver's buffers live for `backend` (NCCL moves CUDA memory only)."""
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@dataclass
class Channel:
    """One end of a pair group; `wait` raises on an error or after `timeout_s`."""

    group: dist.ProcessGroup
    rank: int
    timeout_s: float

    @property
    def peer(self) -> int:
        return 1 - self.rank

    def send_all(self, tensors: list[torch.Tensor]) -> None:
        """Queue every send at once (the backend keeps the wire busy between them), then wait for each."""
        works = [self.group.send([tensor], self.peer, tag) for tag, tensor in enumerate(tensors)]
        for work in works:
            self.wait(work)

    def post_recv(self, tensor: torch.Tensor, tag: int) -> dist.Work:
        """Start receiving into `tensor`; `wait` on the result before reading it."""
        return self.group.recv([tensor], self.peer, tag)

    def wait(self, work: dist.Work) -> None:
        if not work.wait(datetime.timedelta(seconds=self.timeout_s)):
            raise TimeoutError(f"collective transfer did not finish in {self.timeout_s:.0f} s")

    def close(self) -> None:
        """Drop the group's connections now rather than at garbage collection (best effort)."""
        # Closing a broken group may itself fail; there is nothing more to do then.
        with contextlib.suppress(Exception):
            self.group.abort()


def open_channel(
    store: dist.Store, prefix: str, rank: int, backend: str, timeout_s: float, host: str = ""
) -> Channel:
    """Join the pair group named `prefix` as `rank`; blocks until the peer joins (or `timeout_s`).

    `host`: the address gloo listens on and announces. A loopback rendezvous keeps the pair on the
    loopback interface too (gloo's default is the address the machine's hostname resolves to, which
    would listen beyond this machine and fails in containers whose hostname does not resolve)."""
    scoped = dist.PrefixStore(prefix, store)
    timeout = datetime.timedelta(seconds=timeout_s)
    group: dist.ProcessGroup
    if backend == "nccl":
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = timeout
        group = dist.ProcessGroupNCCL(scoped, rank, 2, options)
    else:
        gloo = dist.ProcessGroupGloo._Options()
        gloo._timeout = timeout
        gloo._devices = [dist.ProcessGroupGloo.create_device(hostname=host)]
        group = dist.ProcessGroupGloo(scoped, rank, 2, gloo)
    return Channel(group, rank, timeout_s)


def listen_host(rendezvous_host: str) -> str:
    """The address a receiver's end of the pair uses: loopback if the learner is on loopback, else the
    default (this machine's own address: the learner on another machine connects to it)."""
    return rendezvous_host if rendezvous_host.startswith("127.") or rendezvous_host == "localhost" else ""
