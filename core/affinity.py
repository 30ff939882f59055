"""Pinning a role's process to CPUs: `apply_cpu_affinity(cpus, owner)` at actor and learner start.

`actors.cpu_affinity` and `learner.cpu_affinity` name the CPU ids a role's process may run on. Pinned,
the process gets every one of its threads moved onto those CPUs (Linux `sched_setaffinity` acts on one
thread, so each thread in /proc/self/task is moved; threads and processes started later inherit the
mask), one compute thread per CPU (torch now, OpenMP and MKL through the environment for processes it
starts), and vLLM's CPU worker, which binds its OpenMP threads by `VLLM_CPU_OMP_THREADS_BIND` (or by
NUMA node when that is `auto`), is told to bind to exactly these CPUs. Without that, pinning two roles
to different cores still leaves each with as many threads as the machine has cores, all contending
for the one core it was given.

None is a no-op, so every existing config behaves as before. An id the process may not run on (not on
this machine, or outside the container's CPU set) is a `ValueError` naming it and the CPUs on offer.
"""

import os
import sys
from collections.abc import Sequence
from pathlib import Path

# Environment variables a pinned process sets for the libraries and processes it starts afterwards.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
VLLM_BIND_VARIABLE = "VLLM_CPU_OMP_THREADS_BIND"


def available_cpus() -> set[int]:
    """The CPU ids this process may be scheduled on (the machine's, less any cgroup or taskset limit)."""
    return set(os.sched_getaffinity(0))


def validate_cpu_ids(cpus: Sequence[int], owner: str, available: set[int] | None = None) -> list[int]:
    """The CPU ids sorted and deduplicated; a `ValueError` naming `owner` for an empty list or an id the
    process may not run on."""
    offered = available_cpus() if available is None else available
    if not cpus:
        raise ValueError(f"{owner}: an empty CPU list; give at least one CPU id, or null for no pinning")
    unknown = sorted({cpu for cpu in cpus if not isinstance(cpu, int) or cpu not in offered}, key=str)
    if unknown:
        raise ValueError(
            f"{owner}: CPU id(s) {', '.join(map(str, unknown))} not available to this process "
            f"(available: {format_cpu_list(sorted(offered))})"
        )
    return sorted(set(cpus))


def apply_cpu_affinity(cpus: Sequence[int] | None, owner: str) -> list[int] | None:
    """Pin the current process (all its threads) to `cpus` with one compute thread per CPU.

    Returns the CPUs pinned to, or None when `cpus` is None (nothing changes). Call it at the start of
    a role's process, before it starts engine processes or thread pools, so those inherit the mask.
    """
    if cpus is None:
        return None
    if not hasattr(os, "sched_setaffinity"):  # macOS: no affinity API; say so rather than pretend
        raise ValueError(f"{owner}: CPU pinning needs Linux (os.sched_setaffinity)")
    pinned = validate_cpu_ids(cpus, owner)
    for thread_id in thread_ids():
        try:
            os.sched_setaffinity(thread_id, pinned)
        except ProcessLookupError:
            continue  # the thread ended between the listing and the call
    threads = str(len(pinned))
    for name in THREAD_VARIABLES:
        os.environ[name] = threads
    # vLLM's CPU executor reads this when it spawns its worker (after this call) and sets that worker's
    # OMP_NUM_THREADS / OMP_PLACES from it; "auto" would also reserve a CPU for its scheduler process.
    os.environ[VLLM_BIND_VARIABLE] = format_cpu_list(pinned)
    torch = sys.modules.get("torch")  # not imported here: core/ must not pull torch into every process
    if torch is not None:
        torch.set_num_threads(len(pinned))
    return pinned


def thread_ids() -> list[int]:
    """Every thread of this process (0, the calling thread, where /proc is not there)."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return [0]
    return [int(entry.name) for entry in tasks.iterdir() if entry.name.isdigit()]


def format_cpu_list(cpus: Sequence[int]) -> str:
    """`[0, 1, 2, 5]` -> "0-2,5": the form of /sys cpu lists, which vLLM's parser takes too."""
    runs: list[list[int]] = []
    for cpu in sorted(set(cpus)):
        if runs and runs[-1][1] == cpu - 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in runs)
