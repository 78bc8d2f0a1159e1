#!/usr/bin/env python
"""PyTorch twin vs the compiled CPU backend (gpu_ext/cpu, volbench_cpu_ext) of the Gaussian
operators, on CPU tensors (float32).  Prints a markdown table; not a timed test.

    bash scripts/in-env python benchmarks/bench_gaussian_cpu.py              # 2 threads
    bash scripts/in-env python benchmarks/bench_gaussian_cpu.py --threads 1 --twin-repeats 1

Cases: voxelize at 32x96x96 voxels with 400 and 4,000 Gaussians (per-axis sigma uniform in 1..2
voxels, random rotations, cutoff 3), forward and forward+backward (loss = <V, G>); the slice
rasterizer (mode "focus", sigma_z = 1 voxel, axial cameras) at 96x96 pixels with 400, 4,000 and
5,000 Gaussians in a 32x96x96 volume, forward and forward+backward, 32 slices per call and one
slice per call.  Times are whole ops calls (torch prelude + tile lists + evaluation), median of
--repeats after one warm-up; the twin runs --twin-repeats times.  Backends are switched with
VOLBENCH_GAUSSIAN_BACKEND=twin (the twin) vs auto (the CPU backend).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

import torch  # noqa: E402

from volbench.gaussian_ops import backend, ops  # noqa: E402

SHAPE = (32, 96, 96)


def gaussians(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) * torch.tensor(SHAPE, dtype=torch.float32)
    ls = torch.log(1.0 + torch.rand(n, 3, generator=g))  # sigma 1..2 voxels
    quats = torch.randn(n, 4, generator=g)
    amps = 0.05 + 0.95 * torch.rand(n, generator=g)
    return [means, ls, quats, amps]


def timed(fn, repeats):
    fn()  # warm-up (also builds / loads the backend)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def vox_fn(p, backward):
    def run():
        ps = [t.clone().requires_grad_(backward) for t in p]
        out = ops.voxelize(*ps, SHAPE)
        if backward:
            out.backward(torch.ones_like(out))
    return run


def ras_fn(p, cams, backward):
    def run():
        ps = [t.clone().requires_grad_(backward) for t in p]
        out = ops.rasterize_slices(*ps, cams, SHAPE[1:], (1.0, 1.0), mode="focus", sigma_z=1.0)
        if backward:
            out.backward(torch.ones_like(out))
    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--twin-repeats", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    assert backend.load_cpu() is not None, backend.cpu_reason()

    cases = []
    for n in (400, 4000):
        p = gaussians(n, seed=n)
        for bwd in (False, True):
            cases.append((f"voxelize 32x96x96, {n} G, {'fwd+bwd' if bwd else 'fwd'}",
                          vox_fn(p, bwd), SHAPE[0] * SHAPE[1] * SHAPE[2], "vox"))
    for n in (400, 4000, 5000):
        p = gaussians(n, seed=n + 1)
        for nb in (32, 1):
            # 32 slices: z = 0..31; one slice: z = 15.5 (mid-volume, between two voxel planes)
            cams = ops.axial_cameras(range(nb) if nb > 1 else [15.5], (1.0, 1.0, 1.0))
            for bwd in (False, True):
                cases.append((f"raster 96x96 focus, {n} G, {nb} slice{'s' if nb > 1 else ''}, "
                              f"{'fwd+bwd' if bwd else 'fwd'}", ras_fn(p, cams, bwd), nb, "ras"))

    print(f"threads: {torch.get_num_threads()}, torch {torch.__version__}, "
          f"CPU: {os.cpu_count()} logical cores visible")
    print("| case | twin (ms) | CPU backend (ms) | speed-up | throughput (CPU backend) |")
    print("|---|---:|---:|---:|---|")
    for name, fn, size, kind in cases:
        os.environ[backend.BACKEND_ENV] = "twin"
        t_twin = timed(fn, args.twin_repeats)
        os.environ[backend.BACKEND_ENV] = "auto"
        assert ops.backend_name("cpu") == "cpu"
        t_cpu = timed(fn, args.repeats)
        if kind == "vox":
            thr = f"{size / t_cpu / 1e6:.1f} MVox/s"
        else:
            thr = f"{1e3 * t_cpu / size:.3f} ms per slice"
        print(f"| {name} | {1e3 * t_twin:.1f} | {1e3 * t_cpu:.2f} | {t_twin / t_cpu:.0f}x | {thr} |",
              flush=True)


if __name__ == "__main__":
    main()
