"""Mutation check of the CPU-emulated kernel tests: known-bad edits of gpu_ext/csrc must make
tests/test_gpu_ext_emulated.py fail.

    bash scripts/in-env python tests/gpu_ext_harness/mutate.py            # all mutants, ~2 min
    bash scripts/in-env python tests/gpu_ext_harness/mutate.py --list
    bash scripts/in-env python tests/gpu_ext_harness/mutate.py --only lane1_atomics tile_key_xy

First the unmodified sources must pass; then, for every mutant, a copy of csrc gets the edit and
the emulated tests run against it (pytest -x, without the sanitizer and mutation tests; objects
of unchanged files are reused).  Prints, per mutant, the first test that failed and why; exits 1 when a
mutant survives, 2 when an edit no longer applies to the sources (update MUTANTS then).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HARNESS = Path(__file__).resolve().parent
ROOT = HARNESS.parents[1]
CSRC = ROOT / "gpu_ext" / "csrc"
TESTS = ROOT / "tests" / "test_gpu_ext_emulated.py"

# name -> (what, [(file, old text, new text), ...]); every old text occurs exactly once.
# The per-voxel / per-pixel maths lives in gaussian_math.h (shared with the CPU backend): the
# mutants of the gradient terms edit it there.
MUTANTS = {
    "no_load_barrier": (
        "voxelizer forward: __syncthreads after the shared-memory load dropped",
        [("voxelize_fwd.cu", "      s_amp[t] = amps[gi];\n    }\n    __syncthreads();\n",
          "      s_amp[t] = amps[gi];\n    }\n")]),
    "no_reuse_barrier": (
        "raster backward: __syncthreads before a batch overwrites shared memory dropped",
        [("raster_bwd.cu", "batch += kPixThreads) {\n    __syncthreads();\n",
          "batch += kPixThreads) {\n")]),
    "cnt_end_minus_start": (
        "raster forward: batch count `cnt = end - start` instead of min(256, end - batch)",
        [("raster_fwd.cu",
          "const int cnt = static_cast<int>(min(static_cast<int64_t>(kPixThreads), end - batch));",
          "const int cnt = static_cast<int>(end - start);")]),
    "A_grad_transposed": (
        "voxelizer backward: dL/dA transposed",
        [("gaussian_math.h", "vals[3 + 3 * r + c] = hit ? gy[r] * d[c] : T(0);",
          "vals[3 + 3 * r + c] = hit ? gy[c] * d[r] : T(0);")]),
    "tile_key_xy": (
        "tile lists: x and y swapped in the tile key",
        [("tiles.cu", "(static_cast<int64_t>(z) * ty + y) * tx + x",
          "(static_cast<int64_t>(z) * ty + x) * tx + y")]),
    "lane1_atomics": (
        "raster backward: the warp's atomics issued from lane 1 instead of lane 0",
        [("raster_bwd.cu", "      if (lane == 0) {", "      if (lane == 1) {")]),
    "divergent_shuffle": (
        "voxelizer backward: lanes without a hit skip the warp sums (lane-divergent collective)",
        [("voxelize_bwd.cu", "if (!__any_sync(0xffffffffu, hit)) continue;",
          "if (!__any_sync(0xffffffffu, hit) || !hit) continue;")]),
    "no_end_guard": (
        "voxelizer forward: `j < end` guard of the shared-memory load removed",
        [("voxelize_fwd.cu", "    if (j < end) {", "    if (true) {")]),
    # regressions of the review fixes
    "unguarded_amp_grad": (
        "voxelizer backward: amplitude gradient not guarded by `hit` (review finding c)",
        [("gaussian_math.h", "vals[12] = hit ? gamp : T(0);", "vals[12] = gamp;")]),
    "int32_index_product": (
        "voxelizer forward: 32-bit product 9 * gi (review finding a)",
        [("voxelize_fwd.cu", "s_A[9 * t + a] = A[9 * gi + a];",
          "s_A[9 * t + a] = A[9 * static_cast<int>(gi) + a];")]),
    "absolute_coordinates": (
        "voxelizer forward: float32 absolute coordinates o + i * sp (review finding b)",
        [("voxelize_fwd.cu", "const float pz = iz * g.sp[0];",
          "const float pz = static_cast<float>(g.o[0]) + iz * g.sp[0];"),
         ("voxelize_fwd.cu", "const float py = iy * g.sp[1];",
          "const float py = static_cast<float>(g.o[1]) + iy * g.sp[1];"),
         ("voxelize_fwd.cu", "const float px = ix * g.sp[2];",
          "const float px = static_cast<float>(g.o[2]) + ix * g.sp[2];"),
         ("voxelize_fwd.cu",
          "s_mu[3 * t + a] = static_cast<float>(static_cast<double>(means[3 * gi + a]) - g.o[a]);",
          "s_mu[3 * t + a] = means[3 * gi + a];")]),
    "no_pair_check": (
        "tile lists: the 2^31 pair check removed (review finding d)",
        [("tiles.cu", "if (total > static_cast<int64_t>(INT32_MAX)) {", "if (false) {")]),
    "short_sort_bits": (
        "tile lists: radix sort over one bit too few",
        [("tiles.cu", "int end_bit = bits_for(n_keys);", "int end_bit = bits_for(n_keys) - 1;")]),
    "conic_grad_factor": (
        "raster backward: factor 2 of the off-diagonal conic gradient dropped",
        [("gaussian_math.h", "vals[3] = gm * T(2) * da * db;", "vals[3] = gm * da * db;")]),
    # the compositing kernels
    "comp_no_stop": (
        "composite forward: no stop where T < kTMin (the backward starts from an underflowed T)",
        [("composite_fwd.cu", "if (!stopped && T < static_cast<float>(gm::kTMin)) {",
          "if (false) {")]),
    "comp_background_late": (
        "composite backward: the background S updated before dL/dw_k uses it",
        [("composite_bwd.cu",
          "          gw = Tk * (dot - S) + ga * t_final / om;\n          S = w * dot + om * S;\n",
          "          S = w * dot + om * S;\n          gw = Tk * (dot - S) + ga * t_final / om;\n")]),
    "comp_grad_through_clamp": (
        "composite backward: gradient through the clamped branch of min(w, 0.99)",
        [("gaussian_math.h", "  if (hit && !clamped) {\n    const T gq", "  if (hit) {\n    const T gq")]),
    "short_warp_sum": (
        "warp_sum stops one shuffle early",
        [("common.h", "for (int off = 16; off > 0; off >>= 1)",
          "for (int off = 16; off > 1; off >>= 1)")]),
}


class StaleMutant(RuntimeError):
    pass


def apply(name: str, dst: Path) -> None:
    shutil.copytree(CSRC, dst)
    for fname, old, new in MUTANTS[name][1]:
        path = dst / fname
        text = path.read_text()
        if text.count(old) != 1:
            raise StaleMutant(f"mutant {name}: {old!r} occurs {text.count(old)} times in "
                              f"{fname}, not once; update MUTANTS in {Path(__file__).name}")
        path.write_text(text.replace(old, new))


def check_applicable() -> list[str]:
    """The edits of every mutant still apply to the sources (returns the problems)."""
    problems = []
    for name, (_, edits) in MUTANTS.items():
        for fname, old, _new in edits:
            n = (CSRC / fname).read_text().count(old)
            if n != 1:
                problems.append(f"{name}: {old!r} occurs {n} times in {fname}")
    return problems


def run_tests(csrc: Path, build_dir: Path, timeout: float = 600) -> tuple[int, str, float]:
    env = dict(os.environ, VBEMU_CSRC=str(csrc), VBEMU_BUILD_DIR=str(build_dir),
               OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider",
           "-k", "not sanitizers and not mutation", str(TESTS)]
    t0 = time.time()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return res.returncode, res.stdout + res.stderr, time.time() - t0


def first_failure(output: str) -> tuple[str, str]:
    test = re.search(r"^FAILED (\S+)", output, re.M)
    why = ""
    for pattern in (r"vbemu: FAIL \(.*?\): (.+)", r"CHECK FAILED: (.+)", r"(killed by signal .+)",
                    r"^E\s+(.+)$"):
        if m := re.search(pattern, output, re.M):
            why = m.group(1)
            break
    return (test.group(1).split("::", 1)[-1] if test else "?"), why[:140]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=sorted(MUTANTS), help="these mutants only")
    ap.add_argument("--jobs", type=int, default=2, help="mutants tested at once (default 2)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the run on the unmodified sources (known to pass)")
    ap.add_argument("--build-dir", type=Path,
                    help="object folder to reuse (default: a temporary one)")
    args = ap.parse_args(argv)
    if args.list:
        for name, (what, _) in MUTANTS.items():
            print(f"{name:22s} {what}")
        return 0
    problems = check_applicable()
    if problems:
        print("stale mutants:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    names = args.only or list(MUTANTS)
    with tempfile.TemporaryDirectory(prefix="vbemu-mutants-") as tmp:
        tmp = Path(tmp)
        build_dir = args.build_dir or tmp / "build"
        if not args.no_baseline:
            rc, out, dt = run_tests(CSRC, build_dir)
            if rc != 0:
                print(f"the unmodified sources fail the emulated tests:\n{out[-3000:]}",
                      file=sys.stderr)
                return 1
            print(f"unmodified sources: emulated tests pass ({dt:.0f} s)")

        def one(name):
            apply(name, tmp / name)
            return name, run_tests(tmp / name, build_dir)

        survived = []
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as ex:
            for name, (rc, out, dt) in ex.map(one, names):
                if rc == 0:
                    survived.append(name)
                    print(f"SURVIVED {name:22s} {MUTANTS[name][0]}")
                    continue
                test, why = first_failure(out)
                if test == "?" and "error" not in out.lower():
                    survived.append(name)
                print(f"caught   {name:22s} by {test} ({dt:.0f} s): {why}")
    if survived:
        print(f"{len(survived)} mutant(s) survived: {', '.join(survived)}", file=sys.stderr)
        return 1
    print(f"all {len(names)} mutants caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
