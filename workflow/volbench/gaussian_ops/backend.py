"""Loader of the CUDA extension ``volbench_gpu_ext`` (built from gpu_ext/ in the repository).

Only where torch sees a CUDA device (the kernels are useless elsewhere), in this order:
(1) import the installed module (``pip install ./gpu_ext --no-build-isolation``);
(2) load the module built by scripts/build_gpu_ext.sh from gpu_ext/build/lib (or
$GPU_EXT_BUILD_DIR/lib), unless a source file in gpu_ext/csrc is newer than it;
(3) JIT-compile gpu_ext/csrc with torch.utils.cpp_extension.load (cache: $TORCH_EXTENSIONS_DIR,
else ~/.cache/volbench/torch_extensions; architectures from TORCH_CUDA_ARCH_LIST, default the
visible GPU's).  When all fail, or without CUDA, or with VOLBENCH_GPU_EXT=0, warn once and let
ops.py use the PyTorch twin (same function, autograd gradients).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import threading
import warnings
from pathlib import Path

log = logging.getLogger("volbench.gaussian_ops")

MODULE_NAME = "volbench_gpu_ext"
# the C++ / CUDA sources, in the repository next to workflow/
CSRC = Path(__file__).resolve().parents[3] / "gpu_ext" / "csrc"
SOURCES = ("bindings.cpp", "tiles.cu", "voxelize_fwd.cu", "voxelize_bwd.cu",
           "raster_fwd.cu", "raster_bwd.cu", "composite_fwd.cu", "composite_bwd.cu")

_lock = threading.Lock()
_state: dict = {"tried": False, "module": None, "why": None}


def _build_lib_dir() -> Path:
    env = os.environ.get("GPU_EXT_BUILD_DIR")
    root = Path(env) if env else CSRC.parent / "build"
    return root / "lib"


def _import_built():
    """The module built by scripts/build_gpu_ext.sh, or None when absent or older than csrc."""
    libs = sorted(_build_lib_dir().glob(MODULE_NAME + "*.so"))
    if not libs:
        return None
    so = libs[0]
    newest_src = max((p.stat().st_mtime for p in CSRC.glob("*") if p.is_file()), default=0.0)
    if so.stat().st_mtime < newest_src:
        log.info("ignoring %s: older than the sources in %s", so, CSRC)
        return None
    import torch  # noqa: F401  (libc10 / libtorch must be loaded first)

    spec = importlib.util.spec_from_file_location(MODULE_NAME, so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules[MODULE_NAME] = mod
    return mod


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - defensive
        return False


def _cache_dir() -> Path:
    env = os.environ.get("TORCH_EXTENSIONS_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "volbench" / "torch_extensions"


_STD_CUDA_HOME = "/usr/local/cuda"


def _jit_load():
    if not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")) and \
            (Path(_STD_CUDA_HOME) / "include" / "cuda_runtime_api.h").is_file():
        os.environ["CUDA_HOME"] = _STD_CUDA_HOME  # same rule as gpu_ext/setup.py
    from torch.utils import cpp_extension

    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and not (Path(str(cpp_extension.CUDA_HOME or "")) / "include" /
                     "cuda_runtime_api.h").is_file():
        cpp_extension.CUDA_HOME = home  # module imported before CUDA_HOME was set

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
    """Return the extension module, or None (after one RuntimeWarning) when it cannot be had."""
    with _lock:
        if _state["tried"]:
            return _state["module"]
        _state["tried"] = True
        mod, why = None, None
        if os.environ.get("VOLBENCH_GPU_EXT", "1") == "0":
            why = "disabled by VOLBENCH_GPU_EXT=0"
        elif not _cuda_available():
            why = "no CUDA device"
        else:
            try:
                mod = importlib.import_module(MODULE_NAME)
            except ImportError as e:
                why = f"not installed ({e})"
            if mod is None:
                try:
                    mod = _import_built()
                except Exception as e:  # ABI mismatch, truncated file ...
                    log.info("built module unusable: %s", e)
            if mod is None and jit:
                try:
                    mod = _jit_load()
                except Exception as e:  # compiler missing, build error ...
                    why = (f"not installed, not built, JIT build failed: {e}".splitlines()
                           or ["JIT build failed"])[0]
        if mod is not None:
            why = None
            log.info("volbench: using %s from %s", MODULE_NAME, getattr(mod, "__file__", "?"))
        _state["module"], _state["why"] = mod, why
        if mod is None and why == "no CUDA device":
            # nothing to warn about: without a CUDA device there are no CUDA tensors, and CPU
            # tensors go to the compiled CPU backend (load_cpu warns if that one is missing)
            log.info("volbench: %s not loaded (no CUDA device)", MODULE_NAME)
        elif mod is None:
            warnings.warn(
                f"volbench: CUDA extension {MODULE_NAME} unavailable ({why}); Gaussian "
                "operators on CUDA tensors use the PyTorch twin (build it with "
                "scripts/build_gpu_ext.sh)", RuntimeWarning, stacklevel=3)
        return mod


def reset() -> None:
    """Forget the outcome of load() (tests; after building the extension in-process)."""
    with _lock:
        _state.update(tried=False, module=None, why=None)


def available() -> bool:
    return load() is not None


def reason() -> str | None:
    """Why the extension is not in use (None when it is, or before the first load())."""
    return _state["why"]


# ----------------------------------------------------------------------------- CPU backend
# volbench_cpu_ext: gpu_ext/cpu/cpu_backend.cpp (+ csrc/gaussian_math.h, the maths shared with the
# CUDA kernels) and gpu_ext/cpu/cpu_composite.cpp (the compositing splat stage of composite.py),
# a torch C++ extension built without nvcc (-O3 -fopenmp) by torch.utils.cpp_extension.load into
# the cache outside the clone ($TORCH_EXTENSIONS_DIR, else ~/.cache/volbench/torch_extensions).
# scripts/setup.sh builds it (build_cpu()); a first use that finds no build compiles it (about a
# minute).

CPU_MODULE_NAME = "volbench_cpu_ext"
CPU_SOURCES = tuple(CSRC.parent / "cpu" / s for s in ("cpu_backend.cpp", "cpu_composite.cpp"))
# VOLBENCH_GAUSSIAN_BACKEND: "auto" (default: CUDA kernels for CUDA tensors, the CPU backend
# for CPU tensors, the twin only when neither loads) or "twin" (force the PyTorch twin)
BACKEND_ENV = "VOLBENCH_GAUSSIAN_BACKEND"
_cpu_state: dict = {"tried": False, "module": None, "why": None, "forced_warned": False}


def forced_twin() -> bool:
    """True when VOLBENCH_GAUSSIAN_BACKEND=twin forces the PyTorch twin (warns once)."""
    val = os.environ.get(BACKEND_ENV, "auto").strip().lower()
    if val in ("", "auto", "default"):
        return False
    if val != "twin":
        raise ValueError(f"{BACKEND_ENV} must be 'auto' or 'twin', got {val!r}")
    with _lock:
        if not _cpu_state["forced_warned"]:
            _cpu_state["forced_warned"] = True
            warnings.warn(f"volbench: {BACKEND_ENV}=twin: Gaussian operators use the PyTorch "
                          "twin (slow reference) instead of the compiled backends",
                          RuntimeWarning, stacklevel=3)
    return True


def _cpu_jit(verbose: bool = False):
    from torch.utils import cpp_extension

    missing = [str(s) for s in CPU_SOURCES if not s.is_file()]
    if missing:
        raise RuntimeError(f"CPU backend sources not found: {missing}")
    build = _cache_dir() / CPU_MODULE_NAME
    build.mkdir(parents=True, exist_ok=True)
    return cpp_extension.load(
        name=CPU_MODULE_NAME,
        sources=[str(s) for s in CPU_SOURCES],
        extra_include_paths=[str(CSRC)],
        # -fno-trapping-math: lets the compiler vectorise the branch-free pixel / voxel loops
        # (no effect on results: IEEE operations are unchanged, only FP-exception traps ignored)
        extra_cflags=["-O3", "-fopenmp", "-std=c++17", "-fno-trapping-math"],
        extra_ldflags=["-fopenmp"],
        build_directory=str(build),
        with_cuda=False,
        verbose=verbose,
    )


def load_cpu():
    """The compiled CPU backend module, or None (after one RuntimeWarning) when it cannot be
    built or loaded."""
    with _lock:
        if _cpu_state["tried"]:
            return _cpu_state["module"]
        _cpu_state["tried"] = True
        mod, why = None, None
        try:
            mod = _cpu_jit()
        except Exception as e:  # compiler missing, build error ...
            why = (f"build failed: {e}".splitlines() or ["build failed"])[0]
        _cpu_state["module"], _cpu_state["why"] = mod, why
        if mod is None:
            warnings.warn(
                f"volbench: CPU backend {CPU_MODULE_NAME} unavailable ({why}); Gaussian "
                "operators on CPU tensors use the PyTorch twin", RuntimeWarning, stacklevel=3)
        else:
            log.info("volbench: using %s from %s", CPU_MODULE_NAME, getattr(mod, "__file__", "?"))
        return mod


def cpu_reason() -> str | None:
    """Why the CPU backend is not in use (None when it is, or before the first load_cpu())."""
    return _cpu_state["why"]


def build_cpu(verbose: bool = True) -> str:
    """Build (or find up to date) the CPU backend; returns the module's path (setup.sh)."""
    mod = _cpu_jit(verbose=verbose)
    return str(getattr(mod, "__file__", "?"))

