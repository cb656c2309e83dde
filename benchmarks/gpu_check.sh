#!/usr/bin/env bash
# The GPU check, in one go (under 8 minutes on one GPU; part 3, with 2 or more GPUs, adds about 3: set
# GPU_CHECK_TIMEOUT=700 there): see benchmarks/gpu_check.py for what it measures.
#   bash benchmarks/gpu_check.sh [OUT_DIR]     # default: $OUT when set (the device machine), else benchmarks/results/gpu_check
# Where scaleprof's dependencies are missing (a bare GPU image: PyTorch and NVML but no pydantic or Ray), carry
# wheels in .whl/ (see the device tool's notes): they are installed to /tmp/site first. Part 2 (the Ray study) runs
# only where Ray is installed; the summary says so otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-benchmarks/results/gpu_check}}"
mkdir -p "$out"
py="${PYTHON:-python3}"
[ -x .venv/bin/python ] && py=.venv/bin/python
if ls .whl/*.whl >/dev/null 2>&1; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
timeout "${GPU_CHECK_TIMEOUT:-470}" "$py" benchmarks/gpu_check.py --out "$out" "${@:2}" 2>&1 | tee "$out/log.txt"
exit "${PIPESTATUS[0]}"
