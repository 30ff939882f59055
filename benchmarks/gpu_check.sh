#!/usr/bin/env bash
# The learner on one GPU (issue 21), in one go on a machine with one H100/H200, Python 3.12, PyTorch with
# CUDA, transformers and peft, but no DeepSpeed, Ray or vLLM, and no network:
#   1. installs what the learner lacks from the wheels benchmarks/build_gpu_wheels.sh made beforehand
#      (DeepSpeed, pydantic, msgspec, ...; only what is missing: --no-index, nothing is downloaded);
#   2. runs benchmarks/learner_bench.py's scaled mode on random Qwen2s with Qwen2.5-0.5B and 1.5B
#      shapes, bf16, 64 groups x 4 samples x 512 tokens: tokens/s vs a bare PyTorch loop, MFU, peak
#      memory, step-time breakdown; and the CUDA-vs-CPU parity check of loss and gradient;
#   3. writes a markdown report (date, GPU, versions, figures) to $OUT/gpu.md when $OUT is set, else
#      docs/gpu.md, with the raw JSON and logs next to it.
# Each run has its own time limit so the whole check stays within 8 minutes; a run that fails or runs
# out of time is reported as such, with its log's tail, and the others still run.
#
#   bash benchmarks/gpu_check.sh [--wheels DIR] [--report FILE]   # on the GPU machine
#   bash benchmarks/gpu_check.sh --cpu                            # dry run here: tiny model on the CPU
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="$ROOT/build/gpu-wheels"
REPORT=""
MODE="cuda"
while (( $# )); do
    case "$1" in
        --cpu) MODE="cpu" ;;
        --wheels) WHEELS="$2"; shift ;;
        --report) REPORT="$2"; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
# $PYTHON when set (a dry run can name a bare interpreter to rehearse the install), else the
# checkout's .venv for a dry run, else python3.
if [[ -z "${PYTHON:-}" ]]; then
    PYTHON=python3
    if [[ "$MODE" == "cpu" && -x "$ROOT/.venv/bin/python" ]]; then
        PYTHON="$ROOT/.venv/bin/python"
    fi
fi
if [[ -z "$REPORT" ]]; then
    if [[ -n "${OUT:-}" ]]; then
        REPORT="$OUT/gpu.md"
    elif [[ "$MODE" == "cpu" ]]; then
        REPORT="$(mktemp -d)/gpu.md"  # a dry run never writes docs/gpu.md
    else
        REPORT="$ROOT/docs/gpu.md"
    fi
fi
WORK="$(dirname "$REPORT")/gpu-check"
mkdir -p "$WORK"
STARTED=$(date +%s)

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
if [[ "$MODE" == "cuda" ]]; then
    export DS_ACCELERATOR=cuda
else
    export DS_ACCELERATOR=cpu
fi

log() { echo "[gpu_check $(( $(date +%s) - STARTED ))s] $*"; }

# 1. What the learner imports, installed from the wheels only where missing or too old (with
# pydantic's own parts, for an image without pydantic: pip runs with --no-deps).
missing=()
while read -r requirement module; do
    if ! "$PYTHON" - "$requirement" "$module" <<'EOF' 2>/dev/null
import importlib, importlib.metadata, sys
from packaging.requirements import Requirement
requirement = Requirement(sys.argv[1])
importlib.import_module(sys.argv[2])
sys.exit(0 if requirement.specifier.contains(importlib.metadata.version(requirement.name), prereleases=True) else 1)
EOF
    then
        missing+=("$requirement")
    fi
done <<'EOF'
deepspeed==0.19.8 deepspeed
pydantic>=2.9 pydantic
pydantic-core pydantic_core
annotated-types annotated_types
typing-inspection typing_inspection
typing_extensions>=4.16 typing_extensions
packaging>=20 packaging
msgspec>=0.20 msgspec
msgpack>=1.0 msgpack
pyyaml>=6 yaml
hjson hjson
py-cpuinfo cpuinfo
einops einops
ninja ninja
psutil psutil
tqdm tqdm
EOF
# Into a folder of this check's own, put first on PYTHONPATH: the interpreter's environment is never
# changed (no root, no PEP 668 refusal), and only what is missing goes there, so nothing the image
# has is shadowed. Without pip, the wheels are unpacked (a wheel is a zip of its importable files).
SITE="$WORK/site"
if (( ${#missing[@]} )); then
    log "installing from $WHEELS into $SITE: ${missing[*]}"
    if "$PYTHON" -m pip --version > /dev/null 2>&1; then
        "$PYTHON" -m pip install --quiet --no-index --no-deps --find-links "$WHEELS" --target "$SITE" \
            "${missing[@]}" > "$WORK/install.log" 2>&1
    else
        "$PYTHON" - "$WHEELS" "$SITE" "${missing[@]}" > "$WORK/install.log" 2>&1 <<'EOF'
import re, sys, zipfile
from pathlib import Path
wheels, site = Path(sys.argv[1]), Path(sys.argv[2])
for requirement in sys.argv[3:]:
    name = re.split(r"[<>=!~ ]", requirement, maxsplit=1)[0].replace("-", "_").lower()
    found = [w for w in wheels.glob("*.whl") if w.name.split("-")[0].lower() == name]
    if not found:
        sys.exit(f"no wheel for {requirement} in {wheels}")
    zipfile.ZipFile(found[0]).extractall(site)
    print("unpacked", found[0].name)
EOF
    fi
    code=$?
    if (( code != 0 )); then
        log "install failed:"; tail -20 "$WORK/install.log"; exit 1
    fi
    export PYTHONPATH="$SITE:$PYTHONPATH"
else
    log "every learner dependency is already installed"
fi

# 2. The runs: name, time limit (s), learner_bench.py arguments.
if [[ "$MODE" == "cuda" ]]; then
    RUNS=(
        "qwen2-0.5b|200|--device cuda --model-size 0.5b --parity"
        "qwen2-1.5b|240|--device cuda --model-size 1.5b --micro-batch-tokens ${MBT_15B:-4096}"
    )
else
    small="--groups 4 --prompt-tokens 8 --completion-tokens 24 --steps 1 --warmup 0 --micro-batch-tokens 256"
    RUNS=("tiny-cpu|300|--device cpu --model-size tiny --parity $small")
fi
status=()
for run in "${RUNS[@]}"; do
    IFS='|' read -r name limit arguments <<< "$run"
    log "$name: learner_bench.py $arguments (limit ${limit}s)"
    # shellcheck disable=SC2086  # the arguments are words
    (cd "$ROOT/benchmarks" && timeout "$limit" "$PYTHON" learner_bench.py $arguments \
        --json "$WORK/$name.json" --markdown "$WORK/$name.md") > "$WORK/$name.log" 2>&1
    code=$?
    case $code in
        0) status+=("$name: ok") ;;
        124) status+=("$name: **ran out of its ${limit} s**") ;;
        *) status+=("$name: **failed (exit $code)**") ;;
    esac
    log "${status[-1]}"
done

# 3. The report.
versions="$("$PYTHON" - <<'EOF' 2>/dev/null
import importlib.metadata as m, platform, torch
names = ("torch", "transformers", "deepspeed", "peft", "pydantic")
found = []
for name in names:
    try:
        found.append(f"{name} {m.version(name)}")
    except m.PackageNotFoundError:
        found.append(f"{name} (absent)")
print(f"Python {platform.python_version()}, " + ", ".join(found) + f", CUDA {torch.version.cuda}")
EOF
)"
joined="$(IFS=';'; echo "${status[*]}")"
gpu="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo none)"
{
    echo "# The learner on a GPU"
    echo
    echo "Written by \`benchmarks/gpu_check.sh\`$([[ "$MODE" == cpu ]] && echo " (dry run on the CPU: tiny model, no GPU figures)")"
    echo "on $(date -u '+%Y-%m-%d %H:%M UTC'), in $(( $(date +%s) - STARTED )) s."
    echo
    echo "- GPU: $gpu"
    echo "- $versions"
    echo "- runs: ${joined//;/; }"
    echo
    echo "On a GPU, Tandem's side is \`train_step\` (DeepSpeed ZeRO-2, \`learner.precision: bf16\`: bf16 weights"
    echo "and activations, float32 master weights and AdamW state; single-pass micro-batches of whole"
    echo "groups). The bare loop is the same model, batch, micro-batches and CoPG loss in plain PyTorch:"
    echo "float32 weights under \`torch.autocast(bfloat16)\`, fused AdamW. MFU counts 6 FLOPs per"
    echo "parameter and token plus attention (12 x layers x hidden x sequence) against the GPU's dense"
    echo "bf16 peak (H100 SXM / H200: 989 TFLOP/s). Reference log-probs are computed once, as Tandem's"
    echo "cache serves them after a group's first step."
    echo
    for run in "${RUNS[@]}"; do
        IFS='|' read -r name _ _ <<< "$run"
        if [[ -s "$WORK/$name.md" ]]; then
            cat "$WORK/$name.md"
        else
            echo "### $name: no figures"
            echo
            echo '```'
            tail -15 "$WORK/$name.log"
            echo '```'
        fi
        echo
    done
} > "$REPORT"
log "report: $REPORT"
for line in "${status[@]}"; do
    [[ "$line" == *": ok" ]] || exit 1
done
