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

`auto` (`resolve_auto_affinity`, in the driver before anything starts) splits this machine's CPUs
between the roles, as real deployments split generation and training GPUs: an async run's actors and
learner then overlap without competing for cores (measured on 2 cores with the peer benchmark's
settings: +17 % learner steps/s over no pinning). It pins only an async run that starts its own Ray:
in sync mode the roles take turns, and each should have every core while it works; on a cluster this
machine's CPUs say nothing about the nodes the roles land on.
"""

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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


AUTO = "auto"


def resolve_auto_affinity(
    actors: Sequence[int] | str | None,
    learner: Sequence[int] | str | None,
    pin: bool,
    available: Sequence[int] | None = None,
) -> tuple[list[int] | None, list[int] | None]:
    """`actors.cpu_affinity` and `learner.cpu_affinity` with `auto` made concrete.

    With `pin` false (sync mode, or a run on a cluster) or fewer than two CPUs, `auto` is no pinning.
    Otherwise two `auto`s split the CPUs in halves, actors first (the smaller half when odd: the
    learner's step is usually the longer one); an `auto` beside an explicit list takes the CPUs the
    list leaves, or none (no pinning) when it leaves none. Explicit lists and None pass unchanged."""
    cpus = sorted(available_cpus() if available is None else available)
    if not pin or len(cpus) < 2:
        return _unless_auto(actors), _unless_auto(learner)
    if actors == AUTO and learner == AUTO:
        half = len(cpus) // 2
        return cpus[:half], cpus[half:]
    if actors == AUTO:
        return _rest(cpus, learner), _unless_auto(learner)
    if learner == AUTO:
        return _unless_auto(actors), _rest(cpus, actors)
    return _unless_auto(actors), _unless_auto(learner)


def _unless_auto(value: Sequence[int] | str | None) -> list[int] | None:
    return None if value is None or value == AUTO else list(value)


def _rest(cpus: list[int], taken: Sequence[int] | str | None) -> list[int] | None:
    """The CPUs an explicit list leaves (None when there is no list, or it leaves none)."""
    if taken is None or taken == AUTO:
        return None
    rest = [cpu for cpu in cpus if cpu not in set(taken)]
    return rest or None


def apply_cpu_affinity(cpus: Sequence[int] | str | None, owner: str) -> list[int] | None:
    """Pin the current process (all its threads) to `cpus` with one compute thread per CPU.

    Returns the CPUs pinned to, or None when `cpus` is None (nothing changes). `auto` still unresolved
    here (a role started on its own, not by `tandem train`'s driver) pins nothing either. Call it at
    the start of a role's process, before it starts engine processes or thread pools, so those
    inherit the mask.
    """
    if cpus is None or cpus == AUTO:
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


@contextmanager
def restored_cpu_layout() -> Iterator[None]:
    """Put this process's CPU mask, thread counts and their environment back as they were on exit.

    A role pins the process it runs in. `tandem train` owns its process, but a program that calls the
    driver in one of its own threads (a notebook, a test, a sweep) must not be left on one core with
    one compute thread for everything it does after the run."""
    mask = os.sched_getaffinity(0) if hasattr(os, "sched_setaffinity") else None
    names = (*THREAD_VARIABLES, VLLM_BIND_VARIABLE)
    environment = {name: os.environ.get(name) for name in names}
    torch = sys.modules.get("torch")
    torch_threads = torch.get_num_threads() if torch is not None else None
    try:
        yield
    finally:
        if mask is not None and os.sched_getaffinity(0) != mask:
            for thread_id in thread_ids():
                try:
                    os.sched_setaffinity(thread_id, mask)
                except ProcessLookupError:
                    continue
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if torch_threads is not None and torch is not None:
            torch.set_num_threads(torch_threads)


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
