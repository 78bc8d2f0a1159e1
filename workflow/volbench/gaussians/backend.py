"""Loader of the CUDA extension ``volbench_gpu_ext`` (built from gpu_ext/ in the repository).

Order: (1) import the installed module (``pip install ./gpu_ext --no-build-isolation``);
(2) if CUDA is available, JIT-compile gpu_ext/csrc with torch.utils.cpp_extension.load
(cache: $TORCH_EXTENSIONS_DIR, else ~/.cache/volbench/torch_extensions; architectures from
TORCH_CUDA_ARCH_LIST); (3) otherwise warn once and let ops.py use the PyTorch twin.
Set VOLBENCH_GPU_EXT=0 to force the twin.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import warnings
from pathlib import Path

log = logging.getLogger("volbench.gaussians")

MODULE_NAME = "volbench_gpu_ext"
# the C++ / CUDA sources, in the repository next to workflow/
CSRC = Path(__file__).resolve().parents[3] / "gpu_ext" / "csrc"
SOURCES = ("bindings.cpp", "tiles.cu", "voxelize_fwd.cu", "voxelize_bwd.cu",
           "raster_fwd.cu", "raster_bwd.cu")

_lock = threading.Lock()
_state: dict = {"tried": False, "module": None, "why": None}


def _cache_dir() -> Path:
    env = os.environ.get("TORCH_EXTENSIONS_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "volbench" / "torch_extensions"


def _jit_load():
    from torch.utils import cpp_extension

    missing = [s for s in SOURCES if not (CSRC / s).is_file()]
    if missing:
        raise RuntimeError(f"gpu_ext sources not found ({missing} under {CSRC})")
    build = _cache_dir() / MODULE_NAME
    build.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", _default_arch_list())
    return cpp_extension.load(
        name=MODULE_NAME,
        sources=[str(CSRC / s) for s in SOURCES],
        extra_include_paths=[str(CSRC)],
        extra_cflags=["-O3"],
        extra_cuda_cflags=["-O3", "--use_fast_math"],
        build_directory=str(build),
        verbose=False,
    )


def _default_arch_list() -> str:
    """The local GPU's architecture when one is visible, else "8.0;9.0"."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            return f"{major}.{minor}"
    except Exception:  # pragma: no cover - defensive
        pass
    return "8.0;9.0"


def load(jit: bool = True):
    """Return the extension module or None (after one warning) when it cannot be had."""
    with _lock:
        if _state["tried"]:
            return _state["module"]
        _state["tried"] = True
        mod, why = None, None
        if os.environ.get("VOLBENCH_GPU_EXT", "1") == "0":
            why = "disabled by VOLBENCH_GPU_EXT=0"
        else:
            try:
                mod = importlib.import_module(MODULE_NAME)
            except ImportError as e:
                why = f"not installed ({e})"
                try:
                    import torch

                    cuda = torch.cuda.is_available()
                except Exception:  # pragma: no cover
                    cuda = False
                if jit and cuda:
                    try:
                        mod = _jit_load()
                        why = None
                    except Exception as e2:  # compiler missing, build error ...
                        why = f"JIT build failed: {e2}".splitlines()[0]
                elif not cuda:
                    why = "no CUDA device"
        _state["module"], _state["why"] = mod, why
        if mod is None:
            warnings.warn(
                f"volbench: CUDA extension {MODULE_NAME} unavailable ({why}); Gaussian "
                "operators use the PyTorch twin (build it with scripts/build_gpu_ext.sh)",
                RuntimeWarning, stacklevel=3)
        return mod


def available() -> bool:
    return load() is not None


def reason() -> str | None:
    """Why the extension is not in use (None when it is, or before the first load())."""
    return _state["why"]
