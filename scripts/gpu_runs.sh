#!/usr/bin/env bash
# The GPU runs of volbench (gpu_ext, SIREN, the Gaussian codecs), in one go, on a machine with a CUDA GPU:
#   1. build the extension for this GPU's architecture (scripts/build_gpu_ext.sh -> gpu_ext/build,
#      which the loader in workflow/volbench/gaussian_ops/backend.py picks up; no pip install needed)
#   2. parity tests of the kernels against the PyTorch twin (tests/test_gpu_ext_parity.py)
#      and the twin's own tests (tests/test_gaussian_ops.py)
#   3. the benchmarks (benchmarks/bench_gpu_ext.py): results in docs/benchmarks-gpu/ (JSON and
#      markdown, tracked) and the results block of docs/benchmarks-gpu.md replaced by the figures
#   4. the codec benchmarks on the GPU: SIREN decode speed (benchmarks/bench_siren_decode.py), the
#      Gaussian codecs' PSNR against training time (benchmarks/bench_gaussian_codecs.py) and the
#      quality evidence at the papers' sizes (benchmarks/quality_evidence.py --size real); results
#      in docs/benchmarks-gpu/ (skip with SKIP_CODECS=1; the Gaussian codec benchmark alone takes
#      several hours on one H100: 4 codecs x 2 volumes x 40k iterations)
#
#   scripts/gpu_runs.sh                 # everything (steps 1-3: about 10-15 min on one H100)
#   SKIP_CODECS=1 scripts/gpu_runs.sh   # steps 1-3 only
#   SKIP_BUILD=1 scripts/gpu_runs.sh    # reuse gpu_ext/build
#   BENCH_ARGS="--skip-large" scripts/gpu_runs.sh
#
# Environment: PYTHON (default $VIRTUAL_ENV/bin/python, else python3) with a CUDA build of torch
# and pytest; nvcc (CUDA_HOME or /usr/local/cuda); TORCH_CUDA_ARCH_LIST (default: the visible
# GPU's compute capability); MAX_JOBS (default 8).  Stops at the first failure (non-zero exit).
# Logs of every step go to benchmarks/results/gpu_runs-<date>/ (git-ignored).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -n "${VIRTUAL_ENV:-}" ]]; then PYTHON="$VIRTUAL_ENV/bin/python"; else PYTHON="$(command -v python3)"; fi
fi
export PYTHON
stamp="$(date -u +%Y%m%dT%H%MZ)"
logs="benchmarks/results/gpu_runs-$stamp"
mkdir -p "$logs"

echo "== 0. environment"
nvidia-smi | tee "$logs/nvidia-smi.txt" || true
"$PYTHON" - <<'PY' | tee "$logs/env.txt"
import sys, torch
assert torch.cuda.is_available(), "gpu_runs.sh: torch sees no CUDA device"
p = torch.cuda.get_device_properties(0)
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"GPU {p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB")
PY
if [[ -z "${TORCH_CUDA_ARCH_LIST:-}" ]]; then
  TORCH_CUDA_ARCH_LIST="$("$PYTHON" -c 'import torch; M, m = torch.cuda.get_device_capability(); print(f"{M}.{m}")')"
fi
export TORCH_CUDA_ARCH_LIST
export MAX_JOBS="${MAX_JOBS:-8}"

echo "== 1. build (archs $TORCH_CUDA_ARCH_LIST)"
if [[ "${SKIP_BUILD:-0}" != "1" ]]; then
  bash scripts/build_gpu_ext.sh 2>&1 | tee "$logs/build.txt"
fi
# the loader must pick up the fresh build, not fall back to the twin
VOLBENCH_GPU_EXT=1 PYTHONPATH=workflow "$PYTHON" - <<'PY' | tee "$logs/loader.txt"
import warnings
warnings.simplefilter("error")  # the fallback warning would be an error here
from volbench.gaussian_ops import backend
mod = backend.load()
assert mod is not None, backend.reason()
print(f"loader: {mod.__file__}")
PY

echo "== 2. tests"
PYTHONPATH=workflow "$PYTHON" -m pytest -q -rs tests/test_gpu_ext_parity.py 2>&1 | tee "$logs/parity.txt"
grep -q " skipped" "$logs/parity.txt" && { echo "gpu_runs.sh: parity tests were skipped" >&2; exit 1; }
PYTHONPATH=workflow "$PYTHON" -m pytest -q tests/test_gaussian_ops.py 2>&1 | tee "$logs/twin.txt"

echo "== 3. benchmarks"
# shellcheck disable=SC2086
PYTHONPATH=workflow "$PYTHON" benchmarks/bench_gpu_ext.py ${BENCH_ARGS:-} \
  --out "docs/benchmarks-gpu/gpu_ext-$stamp.json" --update-doc docs/benchmarks-gpu.md \
  2>&1 | tee "$logs/bench.txt"

if [[ "${SKIP_CODECS:-0}" != "1" ]]; then
  echo "== 4. codec benchmarks"
  PYTHONPATH=workflow "$PYTHON" benchmarks/bench_siren_decode.py --device cuda --device cpu \
    --out "docs/benchmarks-gpu/siren_decode-$stamp.jsonl" 2>&1 | tee "$logs/siren.txt"
  PYTHONPATH=workflow "$PYTHON" benchmarks/bench_gaussian_codecs.py --device cuda \
    --out "docs/benchmarks-gpu/gaussian_codecs-$stamp.json" --figdir docs/benchmarks-gpu 2>&1 | tee "$logs/gaussian.txt"
  PYTHONPATH=workflow "$PYTHON" benchmarks/quality_evidence.py --size real --device cuda \
    --out "docs/benchmarks-gpu/quality_evidence-$stamp.json" 2>&1 | tee "$logs/quality.txt"
fi

echo "gpu_runs.sh: done; figures in docs/benchmarks-gpu/gpu_ext-$stamp.{json,md} and docs/benchmarks-gpu.md, logs in $logs"
