"""`tandem bench peer`: Hugging Face TRL's RLOOTrainer and `tandem train` on the same task and settings.

TRL goes into a virtualenv of its own under the benchmark cache (~/.cache/tandem/bench/trl-venv by
default: `TRL_VERSION` with CPU `torch==TORCH_VERSION`), so Tandem's own dependencies never change.
Then, one after the other, each in a fresh process timed from its launch:
  TRL     benchmarks/peer/trl_rloo.py under the TRL venv's python: RLOOTrainer, transformers generation
  Tandem  `tandem train --config configs/demo.yaml` with the overrides of `MAPPING` (RLOO, on-policy)
Both train models/tiny-arith on its train prompts with exact-match reward (the rule of configs/demo.yaml),
n=4 samples, 32 prompts per generation, 16 groups per optimizer step, lr 1e-4, beta 0.05, 200 steps, and
score greedy completions of the same 200 held-out prompts at step 0, every 10 steps and at the end.

Figures (seconds count from the launch of each process, imports and model loading included):
  time to target   the first evaluation at or above TRL's final eval reward, on each side
  steady steps/s   optimizer steps per second after the first `STEADY_FRACTION` of the steps (both
                   sides evaluate at the same cadence, so evaluation pauses count on both)
  start-up         launch to the end of the first optimizer step
written as the `peer` block of docs/benchmarks.md (replaced alone: the other sections stay), the raw
numbers in docs/benchmarks-peer.json and both eval curves against wall-clock in docs/peer_curves.png.

    .venv/bin/tandem bench peer [--quick] [--out docs/benchmarks.md] [--cache ~/.cache/tandem/bench]
    .venv/bin/python benchmarks/peer_bench.py [--quick] ...       (the same, without the CLI)
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from harness import machine_description, run_in_own_session
from report import PEER_BEGIN, PEER_END, number, replace_block

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "demo.yaml"
TRL_SCRIPT = Path(__file__).resolve().parent / "peer" / "trl_rloo.py"
DEFAULT_CACHE = Path.home() / ".cache" / "tandem" / "bench"

# The TRL release compared against (the newest on the registry when this was written) and the torch
# that goes with it: 2.13.0 is the CPU build Tandem runs on, which pip takes from the local wheel.
TRL_VERSION = "1.16.0"
TORCH_VERSION = "2.13.0"
# What pip resolved for TRL 1.16.0 when this was written, pinned so a rerun measures the same code.
TRANSFORMERS_VERSION = "5.25.0"
# Built for another torch, these break `import transformers` beside CPU torch; TRL needs none of them.
UNWANTED = ("torchvision", "torchaudio", "torchcodec")

STEADY_FRACTION = 0.1  # steps before this share of the run are start-up, not steady state
RUN_LIMIT_S = 900  # per side; a quiet machine needs about 1 (TRL) and 2-3 (Tandem) minutes

# The same environment as every other Tandem command (the Makefile's): CPU back-ends, no model hub.
ENVIRONMENT = {
    "DS_ACCELERATOR": "cpu",
    "VLLM_TARGET_DEVICE": "cpu",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


@dataclass(frozen=True)
class PeerSettings:
    """What both sides share. `quick` shortens the run (a smoke test), nothing else."""

    model: Path = Path("models/tiny-arith")  # relative to the checkout, where both sides run
    n_samples: int = 4
    prompts_per_generation: int = 32
    groups_per_step: int = 16
    lr: float = 1e-4
    beta: float = 0.05
    steps: int = 200
    eval_every: int = 10
    max_tokens: int = 8
    temperature: float = 1.0
    seed: int = 0

    @property
    def train_prompts(self) -> Path:
        return self.model / "prompts" / "train.jsonl"

    @property
    def eval_prompts(self) -> Path:
        return self.model / "prompts" / "eval.jsonl"


@dataclass(frozen=True)
class Mapping:
    """One shared setting, and how each side spells it: RLOOConfig arguments and Tandem config keys.

    A `trl` key starting with `script:` is read by benchmarks/peer/trl_rloo.py, not by RLOOConfig.
    """

    setting: str
    trl: dict[str, Any]
    tandem: dict[str, Any]
    note: str = ""


def mapping(settings: PeerSettings) -> list[Mapping]:
    """The settings table: the one source of both sides' arguments and of the report's mapping table."""
    s = settings
    if s.prompts_per_generation % s.groups_per_step:
        raise ValueError("prompts per generation must be a multiple of the groups per step (TRL's rule)")
    return [
        Mapping("policy", {"script:model": str(s.model)}, {"model.path": str(s.model)}),
        Mapping("precision", {"bf16": False, "fp16": False}, {"model.dtype": "float32"}),
        Mapping(
            "training prompts",
            {"script:train_prompts": str(s.train_prompts)},
            {"actors.train_prompts": str(s.train_prompts)},
        ),
        Mapping(
            "held-out prompts (greedy eval)",
            {"script:eval_prompts": str(s.eval_prompts)},
            {"actors.eval_prompts": str(s.eval_prompts)},
            "TRL: a callback decodes greedily with model.generate; Tandem: the actor's vLLM engine",
        ),
        Mapping(
            "eval cadence (steps)", {"script:eval_every": s.eval_every}, {"learner.eval_every": s.eval_every}
        ),
        Mapping("samples per prompt", {"num_generations": s.n_samples}, {"actors.n_samples": s.n_samples}),
        Mapping(
            "prompts per generation",
            {"steps_per_generation": s.prompts_per_generation // s.groups_per_step},
            {"actors.prompts_per_batch": s.prompts_per_generation},
            "TRL generates steps_per_generation x the step's batch at once",
        ),
        Mapping(
            "groups (prompts) per optimizer step",
            {
                "per_device_train_batch_size": s.groups_per_step * s.n_samples,
                "gradient_accumulation_steps": 1,
            },
            {"learner.batch_groups": s.groups_per_step},
            "TRL counts completions, Tandem groups of n",
        ),
        Mapping(
            "learning rate, constant",
            {"learning_rate": s.lr, "lr_scheduler_type": "constant", "warmup_steps": 0},
            {"learner.lr": s.lr, "learner.warmup_steps": 0},
        ),
        Mapping(
            "optimizer",
            {"optim": "adamw_torch", "weight_decay": 0.0, "max_grad_norm": 1.0},
            {"learner.weight_decay": 0.0, "learner.grad_clip": 1.0},
            "AdamW (torch defaults) on both; Tandem's through DeepSpeed ZeRO-2",
        ),
        Mapping("KL coefficient", {"beta": s.beta}, {"algorithm.beta": s.beta}),
        Mapping(
            "algorithm",
            {"num_iterations": 1},
            {
                "algorithm.name": "rloo",
                "algorithm.importance_sampling": "none",
                "buffer.on_policy_fraction": 1.0,
            },
            "RLOO, leave-one-out baseline, KL-shaped sequence reward; TRL adds PPO-style ratio clipping",
        ),
        Mapping("optimizer steps", {"max_steps": s.steps}, {"learner.max_steps": s.steps}),
        Mapping(
            "completion length (tokens)",
            {"max_completion_length": s.max_tokens},
            {"actors.max_tokens": s.max_tokens},
        ),
        Mapping(
            "sampling",
            {"temperature": s.temperature, "top_p": 1.0, "top_k": 0},
            {"actors.temperature": s.temperature, "actors.top_p": 1.0},
        ),
        Mapping("seed", {"seed": s.seed}, {"run.seed": s.seed}),
        Mapping(
            "reward",
            {"script:reward": "exact match, regex and tolerance of configs/demo.yaml"},
            {"reward.scorers": "exact_match of configs/demo.yaml"},
            "the TRL script carries a copy of the rule (it cannot import Tandem)",
        ),
        Mapping(
            "checkpoints",
            {"save_strategy": "no"},
            {"learner.checkpoint_every": s.steps},
            "Tandem writes one, at the end (its acks wait for a checkpoint)",
        ),
        Mapping(
            "activation (gradient) checkpointing",
            {"activation_checkpointing": False},
            {},
            "off on both; TRL's default turns it on",
        ),
    ]


def trl_arguments(settings: PeerSettings, output_dir: Path) -> dict[str, Any]:
    """RLOOConfig's keyword arguments: the mapped settings plus what keeps TRL quiet and on the CPU."""
    arguments = {
        key: value
        for row in mapping(settings)
        for key, value in row.trl.items()
        if not key.startswith("script:")
    }
    return arguments | {
        "output_dir": str(output_dir),
        "use_cpu": True,
        "report_to": "none",
        "logging_steps": settings.eval_every,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


def tandem_overrides(settings: PeerSettings) -> list[str]:
    """`--set` overrides on configs/demo.yaml; keys whose value is a description are the config's own."""
    overrides = [
        f"{key}={value}"
        for row in mapping(settings)
        for key, value in row.tandem.items()
        if key != "reward.scorers"
    ]
    # Long enough that the step budget, not the clock, ends the run on a loaded machine too. The CPUs
    # split between actors and learner (`auto`, core/affinity.py), as the figures were measured.
    return [*overrides, "run.max_minutes=30", "actors.cpu_affinity=auto", "learner.cpu_affinity=auto"]


def reward_rule(config: Path = CONFIG) -> dict[str, Any]:
    """The exact-match scorer's regex and tolerance from the config Tandem runs with."""
    tree = yaml.safe_load(config.read_text())
    scorers = [s for s in tree["reward"]["scorers"] if s["type"] == "exact_match"]
    if len(scorers) != 1:
        raise ValueError(f"{config}: expected one exact_match scorer, found {len(scorers)}")
    return {"pattern": scorers[0]["pattern"], "tolerance": scorers[0].get("numeric_tolerance")}


# --- the TRL virtualenv ---------------------------------------------------------------------------


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_trl_venv(cache: Path, log: Path) -> Path:
    """The TRL venv's python, creating or completing the venv when its stamp is not this version's."""
    venv = cache / "trl-venv"
    python, stamp = venv_python(venv), venv / ".tandem-peer-installed"
    wanted = {"trl": TRL_VERSION, "torch": TORCH_VERSION, "transformers": TRANSFORMERS_VERSION}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted and python.is_file():
        return python
    cache.mkdir(parents=True, exist_ok=True)
    with log.open("a") as handle:

        def step(*command: str | Path, check: bool = True) -> None:
            print(f"[peer] $ {' '.join(map(str, command))}", flush=True)
            subprocess.run(list(map(str, command)), stdout=handle, stderr=subprocess.STDOUT, check=check)

        if not python.is_file():
            # The base interpreter, not this venv's: a venv made from inside a venv still links to it.
            step(getattr(sys, "_base_executable", sys.executable), "-m", "venv", venv)
        pip = [python, "-m", "pip", "install", "-q"]
        # torch first and alone: pip takes the pinned CPU build from the local wheel; asked for by TRL's
        # requirements with no torch installed, a range would fetch a multi-GB CUDA build instead.
        step(*pip, f"torch=={TORCH_VERSION}")
        step(*pip, f"trl=={TRL_VERSION}", f"transformers=={TRANSFORMERS_VERSION}")
        step(python, "-m", "pip", "uninstall", "-q", "-y", *UNWANTED, check=False)
    found = check_trl_venv(python)
    stamp.write_text(json.dumps(wanted))
    print(f"[peer] TRL venv ready: {found}", flush=True)
    return python


def check_trl_venv(python: Path) -> dict[str, Any]:
    """Versions in the TRL venv; refuses a CUDA torch, NVIDIA wheels, or a torchvision beside torch."""
    probe = (
        "import json, importlib.metadata as m, torch, transformers, trl; "
        "names = sorted(d.metadata['Name'].lower() for d in m.distributions()); "
        "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, "
        "'transformers': transformers.__version__, 'trl': trl.__version__, "
        "'nvidia': [n for n in names if n.startswith('nvidia')], "
        f"'unwanted': [n for n in names if n in {list(UNWANTED)!r}]}}))"
    )
    answer = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, env=os.environ | ENVIRONMENT
    )
    if answer.returncode != 0:
        raise RuntimeError(f"the TRL venv does not import: {answer.stderr.strip().splitlines()[-1:]}")
    found = json.loads(answer.stdout.strip().splitlines()[-1])
    expected = (TRL_VERSION, TRANSFORMERS_VERSION)
    if (
        found["cuda"]
        or found["nvidia"]
        or found["unwanted"]
        or (found["trl"], found["transformers"]) != expected
    ):
        raise RuntimeError(
            f"the TRL venv is not CPU torch {TORCH_VERSION} + TRL {TRL_VERSION} (transformers "
            f"{TRANSFORMERS_VERSION}) alone: {found}; delete it "
            "and run again (pip must find the CPU torch wheel, e.g. through PIP_FIND_LINKS)"
        )
    return found


# --- running each side ------------------------------------------------------------------------------


def launch(command: list[str], log: Path, label: str) -> tuple[float, float]:
    """Run `command` in its own session, output to `log`; returns (launch epoch, wall seconds)."""
    launched = time.time()
    code = run_in_own_session(command, ROOT, os.environ | ENVIRONMENT, log, RUN_LIMIT_S)
    if code is None:
        raise RuntimeError(f"{label} overran {RUN_LIMIT_S} s; see {log}")
    if code != 0:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        raise RuntimeError(f"{label} exited with status {code}: {tail} (log {log})")
    return launched, time.time() - launched


def run_trl(settings: PeerSettings, python: Path, work: Path) -> dict[str, Any]:
    spec = {
        "model": str(settings.model),
        "train_prompts": str(settings.train_prompts),
        "eval_prompts": str(settings.eval_prompts),
        "eval_every": settings.eval_every,
        "reward": reward_rule(),
        "log": str(work / "trl.jsonl"),
        "trl": trl_arguments(settings, work / "trl-output"),
    }
    spec_path = work / "trl-spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    launched, wall = launch([str(python), str(TRL_SCRIPT), str(spec_path)], work / "trl.log", "TRL")
    return read_trl_log(work / "trl.jsonl", launched) | {"wall_s": wall}


def read_trl_log(path: Path, launched: float) -> dict[str, Any]:
    """The TRL script's JSON lines as a timeline: seconds since launch of each step and evaluation."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {
        "steps": [[row["time"] - launched, row["step"]] for row in rows if row["event"] == "step"],
        "evals": [
            [row["time"] - launched, row["step"], row["eval_reward_mean"]]
            for row in rows
            if row["event"] == "eval"
        ],
    }


def run_tandem(settings: PeerSettings, work: Path) -> dict[str, Any]:
    run_dir = work / "tandem-run"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run each time (train refuses old checkpoints)
    command = [sys.executable, "-m", "services.cli", "train", "--config", str(CONFIG)]
    command += ["--run-dir", str(run_dir), "--no-progress"]
    for override in tandem_overrides(settings):
        command += ["--set", override]
    launched, wall = launch(command, work / "tandem.log", "tandem train")
    return read_tandem_run(run_dir, launched) | {"wall_s": wall}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    )


def read_tandem_run(run_dir: Path, launched: float) -> dict[str, Any]:
    """A run directory's steps and evaluations, in seconds since the launch of `tandem train`.

    Rows carry `elapsed_s` from the run recorder's start; events also carry the epoch `time`, which
    places that start (and so every row) on the launch's clock.
    """
    events = read_jsonl(run_dir / "events.jsonl")
    if not events:
        raise RuntimeError(f"{run_dir}: no events.jsonl rows to place the run's clock")
    recorder_start = events[0]["time"] - events[0]["elapsed_s"]
    offset = recorder_start - launched
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    evals = [row for row in read_jsonl(run_dir / "eval.jsonl") if row.get("eval_reward_mean") is not None]
    staleness: dict[str, int] = {}  # groups trained, by how many versions behind the learner they were
    for row in metrics:
        for versions, groups in (row.get("staleness_histogram") or {}).items():
            staleness[str(versions)] = staleness.get(str(versions), 0) + int(groups)
    return {
        "steps": [[offset + row["elapsed_s"], row["step"]] for row in metrics],
        "evals": [[offset + row["elapsed_s"], row["step"], row["eval_reward_mean"]] for row in evals],
        "staleness": dict(sorted(staleness.items(), key=lambda item: int(item[0]))),
    }


# --- figures ----------------------------------------------------------------------------------------


def first_reaching(evals: list[list[float]], target: float) -> list[float] | None:
    """The first (seconds, step, reward) evaluation at or above `target`, or None."""
    return next((row for row in evals if row[2] >= target - 1e-9), None)


def steady_rate(steps: list[list[float]], fraction: float = STEADY_FRACTION) -> float | None:
    """Optimizer steps per second from the step at `fraction` of the run to the last one."""
    if len(steps) < 2:
        return None
    first = steps[min(int(len(steps) * fraction), len(steps) - 2)]
    last = steps[-1]
    return (last[1] - first[1]) / (last[0] - first[0]) if last[0] > first[0] else None


def ratio(top: float | None, bottom: float | None) -> float | None:
    return None if top is None or bottom is None or bottom == 0 else top / bottom


def summarise(trl: dict[str, Any], tandem: dict[str, Any]) -> dict[str, Any]:
    """The report's figures from the two timelines (each: steps [[s, step]], evals [[s, step, reward]])."""
    for name, side in (("TRL", trl), ("Tandem", tandem)):
        if not side["steps"] or not side["evals"]:
            raise RuntimeError(f"{name} recorded no step or no evaluation")
    target = trl["evals"][-1][2]
    sides = {}
    for name, side in (("trl", trl), ("tandem", tandem)):
        reached = first_reaching(side["evals"], target)
        sides[name] = {
            "startup_s": side["steps"][0][0],
            "steady_steps_per_s": steady_rate(side["steps"]),
            "steps": side["steps"][-1][1],
            "final_eval": side["evals"][-1][2],
            "final_eval_step": side["evals"][-1][1],
            "final_eval_s": side["evals"][-1][0],
            "best_eval": max(row[2] for row in side["evals"]),
            "time_to_target_s": None if reached is None else reached[0],
            "target_step": None if reached is None else reached[1],
            "wall_s": side.get("wall_s"),
        }
    return {
        "target_eval": target,
        "sides": sides,
        "steps_per_s_ratio": ratio(sides["tandem"]["steady_steps_per_s"], sides["trl"]["steady_steps_per_s"]),
        "time_to_target_ratio": ratio(sides["trl"]["time_to_target_s"], sides["tandem"]["time_to_target_s"]),
    }


def plot_curves(trl: dict[str, Any], tandem: dict[str, Any], target: float, out: Path) -> Path:
    """Both held-out eval curves against seconds since launch, with each side's first step marked."""
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5))
    for label, side, colour in (("TRL RLOOTrainer", trl, "tab:orange"), ("tandem train", tandem, "tab:blue")):
        axis.plot(
            [r[0] for r in side["evals"]],
            [r[2] for r in side["evals"]],
            "o-",
            ms=3,
            label=label,
            color=colour,
        )
        axis.axvline(side["steps"][0][0], color=colour, ls=":", alpha=0.7)
    axis.axhline(target, color="grey", ls="--", lw=0.8, label=f"TRL's final eval ({target:.3f})")
    axis.set_xlabel("seconds since process start (dotted: first optimizer step)")
    axis.set_ylabel("held-out exact match (greedy)")
    axis.set_ylim(0, 1.02)
    axis.set_xlim(left=0)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


def _s(value: float | None, unit: str = " s") -> str:
    return "not reached" if value is None else f"{number(value)}{unit}"


def _r(value: float | None) -> str:
    return "n/a" if value is None else f"**{value:.2f}**"


def _plain(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _step(step: int | None) -> str:
    return "" if step is None else f" (step {step})"


def render_block(raw: dict[str, Any], picture: str, json_name: str) -> str:
    """The markdown of the `peer` section, from the raw record peer_bench writes (and tests replay)."""
    summary, settings = raw["summary"], raw["settings"]
    trl, tandem = summary["sides"]["trl"], summary["sides"]["tandem"]
    versions = raw["versions"]
    ours = ", ".join(f"{name} {version}" for name, version in raw["machine"]["versions"].items() if version)
    lines = [
        "## peer: TRL RLOOTrainer vs tandem train",
        "",
        f"Generated by `tandem bench peer{' --quick' if raw['quick'] else ''}` on {raw['generated']} in "
        f"{raw['total_seconds'] / 60:.1f} min. Raw numbers: [{json_name}]({json_name}). "
        f"TRL {versions['trl']} (transformers {versions['transformers']}, torch {versions['torch']}) "
        f"in its own venv; Tandem with {ours}. {raw['machine']['cores']} cores; load average "
        f"{raw['load_before'][0]:.1f} before, {raw['load_after'][0]:.1f} after.",
        "",
        f"Both train {Path(settings['model']).name} with RLOO for {settings['steps']} steps, one run each, "
        "one after the other, each in a fresh process timed from its launch (imports and model loading "
        "count). "
        "TRL's RLOOTrainer generates with transformers `generate` and trains in the same process, in turn; "
        "`tandem train` runs the demo config's services (Ray, a vLLM actor, the embedded reward server, the "
        "DeepSpeed learner) asynchronously. The target is TRL's final held-out reward; each side's time to "
        "target is its first evaluation at or above it. Steady steps/s count from the step at "
        f"{STEADY_FRACTION:.0%} of the run to the last, evaluation pauses included on both sides.",
        "",
        "| figure | TRL RLOOTrainer | tandem train | ratio |",
        "|---|---|---|---|",
        f"| seconds to TRL's final eval ({summary['target_eval']:.3f}) | {_s(trl['time_to_target_s'])}"
        f"{_step(trl['target_step'])} | {_s(tandem['time_to_target_s'])}{_step(tandem['target_step'])} "
        f"| TRL ÷ Tandem {_r(summary['time_to_target_ratio'])} |",
        f"| steady-state optimizer steps/s | {_s(trl['steady_steps_per_s'], '')} "
        f"| {_s(tandem['steady_steps_per_s'], '')} | Tandem ÷ TRL {_r(summary['steps_per_s_ratio'])} |",
        f"| start-up: launch to end of first step | {_s(trl['startup_s'])} | {_s(tandem['startup_s'])} | |",
        f"| final eval (step) | {trl['final_eval']:.3f} ({trl['final_eval_step']}) "
        f"| {tandem['final_eval']:.3f} ({tandem['final_eval_step']}) | |",
        f"| best eval | {trl['best_eval']:.3f} | {tandem['best_eval']:.3f} | |",
        f"| launch to final eval | {_s(trl['final_eval_s'])} | {_s(tandem['final_eval_s'])} | |",
        f"| process wall time | {_s(trl['wall_s'])} | {_s(tandem['wall_s'])} | |",
        "",
        f"![held-out reward of both against wall-clock]({picture})",
        "",
        "Settings, and how each side spells them (TRL: `RLOOConfig` arguments, or what the TRL-side script "
        "`benchmarks/peer/trl_rloo.py` reads; Tandem: `--set` keys on `configs/demo.yaml`):",
        "",
        "| setting | TRL | Tandem | note |",
        "|---|---|---|---|",
    ]
    for row in raw["mapping"]:
        trl_text = ", ".join(f"`{key}={value}`" for key, value in row["trl"].items()) or "-"
        tandem_text = ", ".join(f"`{key}={value}`" for key, value in row["tandem"].items()) or "-"
        lines.append(f"| {row['setting']} | {trl_text} | {tandem_text} | {row['note']} |")
    lines += [
        "",
        "Not equal by construction: TRL samples with transformers and clips its importance ratio (PPO-style, "
        "epsilon 0.2; its second step per generation is one update off-policy), Tandem samples with vLLM and "
        f"trains asynchronously on groups a few versions old ({staleness_text(raw['tandem'])}), RLOO without "
        "importance weights as `configs/demo.yaml`'s staleness bound allows; TRL's evaluation pauses "
        "training while Tandem's runs on the actor beside it. One run per side: an eval mean over 200 "
        "prompts has a 95 % interval of about +-0.04, so a target a few hundredths away may be reached a "
        "few evaluations sooner or later in another run.",
    ]
    return "\n".join(lines)


def staleness_text(tandem: dict[str, Any]) -> str:
    """ "share of groups trained at each staleness", e.g. "26 % at 0 versions behind, 25 % at 1, ..."."""
    counts = {int(versions): groups for versions, groups in (tandem.get("staleness") or {}).items()}
    total = sum(counts.values())
    if not total:
        return "staleness not recorded"
    shares = [f"{100 * groups / total:.0f} % at {versions}" for versions, groups in sorted(counts.items())]
    return ", ".join(shares) + " versions behind the learner"


def run_peer(
    out: Path, quick: bool = False, log_dir: Path = ROOT / "runs" / "bench", cache: Path = DEFAULT_CACHE
) -> dict[str, Any]:
    """Install TRL if needed, run both sides, write the report block, JSON and picture; returns the raw."""
    started = time.monotonic()
    settings = PeerSettings()
    if quick:
        settings = replace(settings, steps=40)
    if not (ROOT / settings.train_prompts).is_file():
        raise SystemExit(
            f"{settings.model} is missing: build it with "
            f"`tandem make-model --task arithmetic --out {settings.model}`"
        )
    work = log_dir / "peer"
    work.mkdir(parents=True, exist_ok=True)
    python = ensure_trl_venv(cache, work / "trl-install.log")
    versions = check_trl_venv(python)
    load_before = list(os.getloadavg())
    print(f"[peer] TRL {TRL_VERSION}: RLOOTrainer, {settings.steps} steps ...", flush=True)
    trl = run_trl(settings, python, work)
    print(f"[peer] TRL done in {trl['wall_s']:.0f} s; tandem train ...", flush=True)
    tandem = run_tandem(settings, work)
    print(f"[peer] tandem train done in {tandem['wall_s']:.0f} s", flush=True)
    summary = summarise(trl, tandem)
    raw = {
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "quick": quick,
        "total_seconds": round(time.monotonic() - started, 1),
        "machine": machine_description(),
        "load_before": load_before,
        "load_after": list(os.getloadavg()),
        "versions": versions,
        "settings": {
            key: str(value) if isinstance(value, Path) else value for key, value in asdict(settings).items()
        },
        "mapping": [asdict(row) for row in mapping(settings)],
        "summary": summary,
        "trl": trl,
        "tandem": tandem,
    }
    write_outputs(raw, out)
    return raw


def write_outputs(raw: dict[str, Any], out: Path) -> list[Path]:
    """docs/benchmarks-peer.json, docs/peer_curves.png and the `peer` block of `out` (beside each other)."""
    json_path = out.with_name(out.stem + "-peer.json")
    picture = out.with_name("peer_curves.png")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(raw, indent=1) + "\n")
    plot_curves(raw["trl"], raw["tandem"], raw["summary"]["target_eval"], picture)
    replace_block(out, PEER_BEGIN, PEER_END, render_block(raw, picture.name, json_path.name))
    return [out, json_path, picture]


def describe(raw: dict[str, Any]) -> str:
    summary = raw["summary"]
    trl, tandem = summary["sides"]["trl"], summary["sides"]["tandem"]
    time_ratio, rate_ratio = summary["time_to_target_ratio"], summary["steps_per_s_ratio"]
    return (
        f"target {summary['target_eval']:.3f}: TRL {_s(trl['time_to_target_s'])}, Tandem "
        f"{_s(tandem['time_to_target_s'])} (TRL/Tandem {_plain(time_ratio)}); "
        f"steps/s TRL {_s(trl['steady_steps_per_s'], '')}, Tandem {_s(tandem['steady_steps_per_s'], '')} "
        f"(Tandem/TRL {_plain(rate_ratio)}); start-up TRL {trl['startup_s']:.0f} s, "
        f"Tandem {tandem['startup_s']:.0f} s"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--quick", action="store_true", help="40 steps instead of 200 (a smoke run)")
    parser.add_argument("--log-dir", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the TRL venv lives")
    args = parser.parse_args(argv)
    raw = run_peer(args.out, args.quick, args.log_dir, args.cache)
    print(f"[peer] {describe(raw)}; wrote {args.out} (peer section)", flush=True)


if __name__ == "__main__":
    main()
