"""Compile-and-link check of the CUDA extension (gpu_ext/) through scripts/build_gpu_ext.sh, and
ptxas's resource report of every kernel (no register spills, no local memory).

Needs nvcc and the CUDA build of torch, not a GPU.  The full build takes minutes on 2 cores
(marked slow; CI runs it); the failure check is quick: every source broken on its first line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from concurrent.futures import ThreadPoolExecutor

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "build_gpu_ext.sh"


def _nvcc():
    home = os.environ.get("CUDA_HOME")
    for cand in ([Path(home) / "bin" / "nvcc"] if home else []) + [Path("/usr/local/cuda/bin/nvcc")]:
        if cand.is_file():
            return cand
    found = shutil.which("nvcc")
    return Path(found) if found else None


needs_toolkit = pytest.mark.skipif(
    _nvcc() is None or not torch.version.cuda,
    reason="needs nvcc (CUDA toolkit) and a CUDA build of torch")


def _run(script, env_extra, timeout):
    env = dict(os.environ, PYTHON=sys.executable, **env_extra)
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                          timeout=timeout)


@needs_toolkit
def test_build_script_fails_on_a_compile_error(tmp_path):
    """A source that does not compile must make the script exit non-zero (no silent pass)."""
    tree = tmp_path / "repo"
    (tree / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, tree / "scripts" / SCRIPT.name)
    shutil.copytree(ROOT / "gpu_ext" / "csrc", tree / "gpu_ext" / "csrc")
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy(ROOT / "gpu_ext" / name, tree / "gpu_ext" / name)
    for src in (tree / "gpu_ext" / "csrc").iterdir():
        if src.suffix in (".cu", ".cpp"):
            # a missing header is fatal at once (an #error would let g++ parse torch's headers)
            src.write_text('#include "deliberately_broken_by_the_test.h"\n' + src.read_text())
    res = _run(tree / "scripts" / SCRIPT.name,
               {"GPU_EXT_BUILD_DIR": str(tmp_path / "build"), "MAX_JOBS": "1",
                "TORCH_CUDA_ARCH_LIST": "8.0"}, timeout=600)
    assert res.returncode != 0, res.stdout[-2000:]
    assert "deliberately_broken_by_the_test.h" in res.stdout + res.stderr
    assert not list((tmp_path / "build").glob("lib/*.so"))


def test_build_script_rejects_unknown_arguments():
    res = subprocess.run(["bash", str(SCRIPT), "--no-such-flag"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2 and "unknown argument" in res.stderr


@pytest.mark.slow
@needs_toolkit
def test_extension_compiles_links_and_imports():
    """The real build (sm_80 + sm_90, MAX_JOBS=2) into gpu_ext/build, which is git-ignored and
    where the loader looks; incremental when it is up to date.  The script's own import check
    loads the module and checks its four entry points."""
    res = _run(SCRIPT, {"MAX_JOBS": os.environ.get("MAX_JOBS", "2"),
                        "TORCH_CUDA_ARCH_LIST": os.environ.get("TORCH_CUDA_ARCH_LIST", "8.0;9.0")},
               timeout=3600)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    assert "import OK" in res.stdout
    libs = list((ROOT / "gpu_ext" / "build" / "lib").glob("volbench_gpu_ext*.so"))
    assert libs and libs[0].stat().st_size > 100_000
    # the extension holds device code for both default architectures
    log = (ROOT / "gpu_ext" / "build" / "build.log").read_text()
    if "nvcc" in log:  # not an up-to-date no-op build
        for arch in ("sm_80", "sm_90"):
            assert f"code={arch}" in log, arch


# ----------------------------------------------------------------------------- ptxas report

KERNELS = {  # source -> its kernels (names in the mangled entry points)
    "tiles.cu": ("count_kernel", "emit_kernel", "ranges_kernel"),
    "voxelize_fwd.cu": ("voxel_boxes_kernel", "voxel_fwd_kernel"),
    "voxelize_bwd.cu": ("voxel_bwd_kernel",),
    "raster_fwd.cu": ("raster_boxes_kernel", "raster_fwd_kernel"),
    "raster_bwd.cu": ("raster_bwd_kernel",),
    "composite_fwd.cu": ("composite_boxes_kernel", "composite_fwd_kernel"),
    "composite_bwd.cu": ("composite_bwd_kernel",),
}
ARCHS = ("sm_80", "sm_90")
ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def ptxas_report(src: Path, out_dir: Path) -> tuple[dict, list[str]]:
    """nvcc -Xptxas -v,-warn-spills,-warn-lmem-usage for sm_80 and sm_90 with the extension's
    flags (setup.py); returns {(entry, arch): {stack, spill_st, spill_ld, regs, smem}} and the
    ptxas warnings."""
    cmd = [str(_nvcc()), "-c", "-std=c++17", "-O3", "--use_fast_math",
           *[f"-gencode=arch=compute_{a[3:]},code={a}" for a in ARCHS],
           "-Xptxas", "-v,-warn-spills,-warn-lmem-usage", "-I", str(src.parent), str(src),
           "-o", str(out_dir / (src.stem + ".o"))]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    entries, cur, warnings = {}, None, []
    for line in (res.stdout + res.stderr).splitlines():
        if "warning" in line.lower():
            warnings.append(line.strip())
        if m := ENTRY.search(line):
            cur = entries.setdefault((m.group(1), m.group(2)), {})
        elif (m := FRAME.search(line)) and cur is not None:
            cur.update(stack=int(m.group(1)), spill_st=int(m.group(2)), spill_ld=int(m.group(3)))
        elif (m := USED.search(line)) and cur is not None:
            cur.update(regs=int(m.group(1)), smem=int(m.group(2) or 0))
    return entries, warnings


@pytest.mark.skipif(_nvcc() is None, reason="needs nvcc (CUDA toolkit)")
def test_kernels_use_no_local_memory(tmp_path):
    """Every kernel (ours and CUB's) for sm_80 and sm_90: no register spills, no stack frame
    (local memory), no ptxas warning; our kernels' static shared memory within 48 KiB."""
    csrc = ROOT / "gpu_ext" / "csrc"
    with ThreadPoolExecutor(max_workers=2) as ex:
        reports = dict(zip(KERNELS, ex.map(lambda f: ptxas_report(csrc / f, tmp_path), KERNELS)))
    problems = []
    for src, (entries, warnings) in reports.items():
        problems += [f"{src}: {w}" for w in warnings]
        for kernel in KERNELS[src]:
            for arch in ARCHS:
                if not any(kernel in e and a == arch for e, a in entries):
                    problems.append(f"{src}: no ptxas report of {kernel} for {arch}")
        for (entry, arch), r in entries.items():
            if r.get("stack", 1) or r.get("spill_st", 1) or r.get("spill_ld", 1):
                problems.append(f"{src}: {entry} ({arch}) uses local memory: {r}")
            if "vbgs" in entry and r.get("smem", 0) > 48 * 1024:
                problems.append(f"{src}: {entry} ({arch}) has {r['smem']} bytes of shared memory")
    assert not problems, "\n".join(problems)
