#!/usr/bin/env bash
# Compile and link the CUDA extension volbench_gpu_ext (gpu_ext/) and check that it imports.
#
#   scripts/build_gpu_ext.sh             # build in gpu_ext/build, import check
#   scripts/build_gpu_ext.sh --install   # also pip install it into the active environment
#
# Environment: PYTHON (default: python3 on PATH, or $VIRTUAL_ENV/bin/python),
# CUDA_HOME (default: /usr/local/cuda if present, else derived from `which nvcc`),
# TORCH_CUDA_ARCH_LIST (default "8.0;9.0"; CI builds one, e.g. "8.0"),
# MAX_JOBS (parallel compile jobs, default 2),
# GPU_EXT_BUILD_DIR (default gpu_ext/build, git-ignored; any folder outside the source tree works:
# the module lands in $GPU_EXT_BUILD_DIR/lib, objects in $GPU_EXT_BUILD_DIR/temp).
# Exits non-zero on any failure (compile, link, import, missing symbols).
# A GPU is not needed: the import check loads the module without running a kernel.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
install=0
for a in "$@"; do
  case "$a" in
    --install) install=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "build_gpu_ext.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -n "${VIRTUAL_ENV:-}" ]]; then PYTHON="$VIRTUAL_ENV/bin/python"; else PYTHON="$(command -v python3)"; fi
fi
if [[ -z "${CUDA_HOME:-}" ]]; then
  if [[ -x /usr/local/cuda/bin/nvcc ]]; then
    CUDA_HOME=/usr/local/cuda
  elif command -v nvcc >/dev/null 2>&1; then
    CUDA_HOME="$(cd "$(dirname "$(command -v nvcc)")/.." && pwd)"
  else
    echo "build_gpu_ext.sh: nvcc not found; install the CUDA toolkit or set CUDA_HOME" >&2
    exit 1
  fi
fi
export CUDA_HOME
export PATH="$CUDA_HOME/bin:$PATH"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;9.0}"
export MAX_JOBS="${MAX_JOBS:-2}"

torch_cuda="$("$PYTHON" -c 'import torch; print(torch.version.cuda or "")')" || {
  echo "build_gpu_ext.sh: cannot import torch with $PYTHON" >&2; exit 1; }
if [[ -z "$torch_cuda" ]]; then
  echo "build_gpu_ext.sh: $PYTHON has a CPU-only torch; install a CUDA build of torch" >&2
  exit 1
fi
nvcc_ver="$("$CUDA_HOME/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')"
echo "build_gpu_ext.sh: torch CUDA $torch_cuda, nvcc $nvcc_ver ($CUDA_HOME), archs $TORCH_CUDA_ARCH_LIST"
if [[ "${torch_cuda%%.*}" != "${nvcc_ver%%.*}" ]]; then
  echo "build_gpu_ext.sh: warning: major versions of torch's CUDA and nvcc differ" >&2
fi

build_dir="${GPU_EXT_BUILD_DIR:-$here/gpu_ext/build}"
mkdir -p "$build_dir"
build_dir="$(cd "$build_dir" && pwd)"
cd "$here/gpu_ext"
start=$(date +%s)
log="$build_dir/build.log"
# keep the full compiler output (warnings included) next to the objects
"$PYTHON" setup.py build_ext --build-lib "$build_dir/lib" --build-temp "$build_dir/temp" 2>&1 \
  | tee "$log"
echo "build_gpu_ext.sh: compiled in $(( $(date +%s) - start )) s"
nwarn="$(grep -ci 'warning' "$log" || true)"
echo "build_gpu_ext.sh: $nwarn line(s) mentioning 'warning' in $log"

so="$(ls "$build_dir"/lib/volbench_gpu_ext*.so | head -n1)"
[[ -n "$so" ]] || { echo "build_gpu_ext.sh: no shared object produced" >&2; exit 1; }
PYTHONPATH="$build_dir/lib${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" - <<'PY'
import torch  # noqa: F401  (loads libc10/libtorch first)
import volbench_gpu_ext as m
need = ["voxelize_forward", "voxelize_backward", "raster_forward", "raster_backward", "composite_fwd", "composite_bwd"]
missing = [n for n in need if not hasattr(m, n)]
assert not missing, f"missing symbols {missing}"
print(f"build_gpu_ext.sh: import OK ({m.__file__})")
PY

if [[ $install -eq 1 ]]; then
  "$PYTHON" -m pip install . --no-build-isolation
fi
