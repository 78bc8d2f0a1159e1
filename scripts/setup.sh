#!/usr/bin/env bash
# Sets up volbench on a fresh Debian/Ubuntu machine; safe to run again (it skips what is done).
#   1. system packages (as root, where missing): ffmpeg (libx265), OpenJPEG, zstd
#   2. a virtual environment, outside the clone so that every clone and CI run reuse it:
#      $VOLBENCH_VENV (default ~/.cache/volbench/venv)
#   3. torch/torchvision (the package index's CUDA 13.0 build: lpips needs torchvision, gpu_ext
#      compiles against it), then requirements.txt, then volbench itself (editable)
#   4. the LPIPS backbone weights, offline from then on (volbench provision-lpips)
#   5. the compiled CPU backend of the Gaussian operators (volbench_cpu_ext, gpu_ext/cpu)
# A non-root cluster user uses conda instead: see README.md, "Run on a cluster".
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VOLBENCH_VENV:-$HOME/.cache/volbench/venv}
py=${PYTHON:-python3}

missing=()
for pkg in ffmpeg libopenjp2-7 libopenjp2-tools zstd; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: missing system packages ${missing[*]}; install them (apt-get install ${missing[*]}) or use conda (README)" >&2
    exit 1
  fi
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv"
  mkdir -p "$(dirname "$venv")"
  "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

# torch from the package index itself: a local CPU-only wheel folder configured for pip
# (find-links) would shadow it with a build whose torchvision ops do not load.
if ! "$venv/bin/python" -c "import torch, torchvision, sys; sys.exit(not (torch.__version__.startswith('2.13.0') and torch.version.cuda))" 2>/dev/null; then
  echo "setup: installing torch 2.13.0 + torchvision 0.28.0 (CUDA build, several GB)"
  env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "${pip[@]}" install --force-reinstall --no-deps torch==2.13.0 torchvision==0.28.0
  env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "${pip[@]}" install torch==2.13.0 torchvision==0.28.0
fi
stamp="$venv/.volbench-requirements.sha256"
want=$(cat "$here/requirements.txt" "$here/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing requirements.txt"
  env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "${pip[@]}" install -r "$here/requirements.txt"
  echo "$want" > "$stamp"
fi
# volbench itself, from this clone (the rules use the clone's workflow/ directly too)
"${pip[@]}" install --no-deps --no-build-isolation -e "$here" >/dev/null
"$venv/bin/python" -m volbench.cli provision-lpips
# the compiled CPU backend of the Gaussian operators (gpu_ext/cpu, g++ -O3 -fopenmp, no nvcc),
# into the cache outside the clone ($TORCH_EXTENSIONS_DIR, else ~/.cache/volbench/torch_extensions);
# a no-op when up to date
echo "setup: building the Gaussian CPU backend (volbench_cpu_ext)"
PYTHONPATH="$here/workflow" "$venv/bin/python" -c "from volbench.gaussian_ops import backend; print('setup: CPU backend', backend.build_cpu(verbose=False))"
echo "setup: ready ($venv)"
