#!/usr/bin/env bash
# Build, on a machine with network, the wheels benchmarks/gpu_check.sh installs on a GPU machine that
# has none: DeepSpeed (only an sdist on PyPI, built here into a pure-Python wheel, its CUDA ops left to
# DeepSpeed's JIT) and the learner's other dependencies that a bare "PyTorch + transformers + peft"
# image may lack (pydantic and its parts, msgspec, msgpack, hjson, py-cpuinfo, einops, ninja, ...),
# as CPython 3.12 manylinux x86_64 wheels, at the versions this checkout's .venv runs. Total: a few
# MiB (checked against the 64 MiB a device run may carry).
#
#   bash benchmarks/build_gpu_wheels.sh [OUT]     # OUT defaults to build/gpu-wheels (git-ignored)
#
# Then carry OUT to the GPU machine (the device tool's `carry: ["build/gpu-wheels"]`) and run
# benchmarks/gpu_check.sh there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/build/gpu-wheels}"
VENV_PYTHON="${VENV_PYTHON:-$ROOT/.venv/bin/python}"
TARGET_PYTHON="${TARGET_PYTHON:-3.12}"
LIMIT_MIB=64

# The learner's third-party imports besides torch/transformers (see benchmarks/learner_bench.py's
# imports); DeepSpeed's own requirements are in its METADATA.
PACKAGES=(
    pydantic pydantic_core annotated-types typing-inspection typing_extensions
    msgspec msgpack pyyaml
    hjson py-cpuinfo einops ninja psutil packaging tqdm
)

version_of() {
    "$VENV_PYTHON" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1"
}

mkdir -p "$OUT"
rm -f "$OUT"/*.whl

# DeepSpeed: pip builds its sdist into a py3-none-any wheel (no ops compiled: DS_BUILD_OPS=0); setup.py
# imports torch, so the build uses this venv's torch (no build isolation).
DS_VERSION="$(version_of deepspeed)"
DS_BUILD_OPS=0 "$VENV_PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation \
    --wheel-dir "$OUT" "deepspeed==$DS_VERSION"

pins=()
for package in "${PACKAGES[@]}"; do
    pins+=("$package==$(version_of "$package")")
done
"$VENV_PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$OUT" \
    --python-version "$TARGET_PYTHON" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    "${pins[@]}"

size_mib=$(( $(du -sk "$OUT" | cut -f1) / 1024 ))
ls -1 "$OUT"
echo "wheels: $(find "$OUT" -name '*.whl' | wc -l) in $OUT, ${size_mib} MiB"
if (( size_mib >= LIMIT_MIB )); then
    echo "more than ${LIMIT_MIB} MiB: a device run cannot carry them" >&2
    exit 1
fi
