"""Build the CPU execution harness of gpu_ext (``vbemu``) with g++: no nvcc, no torch.

The .cu files of gpu_ext/csrc are compiled as C++ (``-x c++``) with ``shim/`` first on the
include path (its cuda_runtime.h defines the CUDA dialect and VB_LAUNCH), then linked with the
fiber runtime (emu.cpp), the host stand-ins for CUB (host_seam.cpp), the driver and the runtime's
self-tests.  Flavours: ``fast`` (-O2 -fwrapv: signed overflow wraps as on the GPU) and
``sanitize`` (-fsanitize=address,undefined, every report fatal).

    python tests/gpu_ext_harness/build.py [--flavour fast|sanitize] [--csrc DIR] OUT_DIR

Objects are content-addressed (flags + source + headers), so a build dir reused with a changed
source recompiles only that file (the mutation check relies on it).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HARNESS = Path(__file__).resolve().parent
ROOT = HARNESS.parents[1]
CSRC = ROOT / "gpu_ext" / "csrc"
HARNESS_SOURCES = ("emu.cpp", "host_seam.cpp", "driver.cpp", "selftest.cpp")
COMMON_FLAGS = ["-std=c++17", "-Wall", "-Wextra", "-Wno-unknown-pragmas", "-pthread"]
FLAVOURS = {
    "fast": ["-O2", "-fwrapv"],
    "sanitize": ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
                 "-fno-sanitize-recover=all"],
}
# environment for running a sanitizer build: every finding is fatal, no leak check (the driver
# never frees its buffers: it exits)
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:halt_on_error=1:exitcode=87",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=87",
}


class BuildError(RuntimeError):
    pass


def compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++")


HEADER_SUFFIXES = (".h", ".cuh", ".hpp", ".inl")


def kernel_sources(csrc: Path = CSRC) -> list[str]:
    """Every .cu file of csrc (bindings.cpp, the torch glue, is not part of the harness)."""
    return sorted(p.name for p in Path(csrc).glob("*.cu"))


def _headers(csrc: Path) -> bytes:
    parts = [p.read_bytes() for p in sorted(csrc.iterdir()) if p.suffix in HEADER_SUFFIXES]
    parts += [p.read_bytes() for p in sorted(HARNESS.glob("*.h"))]
    parts += [p.read_bytes() for p in sorted((HARNESS / "shim").glob("*.h"))]
    return b"\0".join(parts)


def build(out_dir: Path, flavour: str = "fast", csrc: Path = CSRC, jobs: int = 2) -> Path:
    """Compile (what is not compiled yet) and link; returns the path of the executable."""
    cxx = compiler()
    if cxx is None:
        raise BuildError("g++ not found")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    flags = COMMON_FLAGS + FLAVOURS[flavour]
    incs = ["-I", str(HARNESS / "shim"), "-I", str(csrc), "-I", str(HARNESS)]
    headers = _headers(Path(csrc))
    jobs_list = []
    for name in kernel_sources(csrc) + list(HARNESS_SOURCES):
        src = (Path(csrc) if name.endswith(".cu") else HARNESS) / name
        lang = ["-x", "c++"] if name.endswith(".cu") else []
        h = hashlib.sha256(" ".join(flags).encode() + b"\0" + src.read_bytes() + b"\0" + headers)
        obj = out_dir / f"{src.stem}-{flavour}-{h.hexdigest()[:16]}.o"
        jobs_list.append((src, obj, [cxx, *flags, *incs, "-c", *lang, str(src), "-o", str(obj)]))

    def compile_one(job):
        src, obj, cmd = job
        if obj.exists():
            return None
        tmp = obj.with_suffix(".tmp.o")
        cmd = cmd[:-1] + [str(tmp)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            return f"{src.name}:\n{res.stderr[-6000:]}"
        tmp.replace(obj)
        return None

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        errors = [e for e in ex.map(compile_one, jobs_list) if e]
    if errors:
        raise BuildError("harness compile failed: " + "\n".join(errors))
    objs = [str(j[1]) for j in jobs_list]
    exe_key = hashlib.sha256("\0".join(objs).encode()).hexdigest()[:16]
    exe = out_dir / f"vbemu-{flavour}-{exe_key}"
    if not exe.exists():
        tmp = out_dir / (exe.name + ".tmp")
        res = subprocess.run([cxx, *flags, *objs, "-o", str(tmp)], capture_output=True, text=True)
        if res.returncode != 0:
            raise BuildError("harness link failed:\n" + res.stderr[-6000:])
        tmp.replace(exe)
    return exe


def run_env(flavour: str) -> dict:
    env = dict(os.environ)
    if flavour == "sanitize":
        env.update(SANITIZER_ENV)
    return env


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--flavour", choices=sorted(FLAVOURS), default="fast")
    ap.add_argument("--csrc", type=Path, default=CSRC)
    args = ap.parse_args(argv)
    try:
        print(build(args.out_dir, args.flavour, args.csrc))
    except BuildError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
