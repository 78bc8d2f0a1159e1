#!/usr/bin/env python
"""PyTorch twin vs the compiled CPU backend (gpu_ext/cpu/cpu_composite.cpp) of the compositing
slice rasterizer (gaussian_ops/composite.py), on float32 CPU tensors.  Prints a markdown table;
not a timed test.

    bash scripts/in-env python scripts/bench_composite_cpu.py              # 2 threads
    bash scripts/in-env python scripts/bench_composite_cpu.py --threads 1 --twin-repeats 1

Gaussians as in benchmarks/bench_gaussian_cpu.py: uniform in a 32x96x96 volume (unit spacing),
per-axis sigma uniform in 1..2 voxels, random rotations, opacity 0.05..1, grey values; axial
slices of 96x96 pixels, mode "composite", cutoff 3.  Loss for fwd+bwd: sum(image) + sum(alpha).
Times are whole composite_slices calls (torch prelude + splat stage, + autograd backward),
median of --repeats after one warm-up (the twin: --twin-repeats); "splat stage" is the compiled
forward+backward alone on the prelude's outputs.
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

from volbench.gaussian_ops import axial_cameras, backend  # noqa: E402
from volbench.gaussian_ops import composite  # noqa: E402

SHAPE = (32, 96, 96)


def gaussians(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) * torch.tensor(SHAPE, dtype=torch.float32)
    ls = torch.log(1.0 + torch.rand(n, 3, generator=g))  # sigma 1..2 voxels
    quats = torch.randn(n, 4, generator=g)
    opac = 0.05 + 0.95 * torch.rand(n, generator=g)
    col = torch.rand(n, generator=g)
    return [means, ls, quats, opac, col]


def timed(fn, repeats):
    fn()  # warm-up (also builds / loads the backend)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def call_fn(p, cams, backward, which):
    def run():
        ps = [t.clone().requires_grad_(backward) for t in p]
        r = composite.composite_slices(*ps, cams, SHAPE[1:], backend=which)
        if backward:
            (r.image.sum() + r.alpha.sum()).backward()
    return run


def splat_fn(p, cams):
    with torch.no_grad():
        m2, conic, wpeak, order = (t.contiguous() for t in
                                   composite.prelude(*p[:4], cams))
    vals = p[4][:, None].contiguous()
    geom = (SHAPE[1], SHAPE[2], 1.0, 1.0, 3.0, False)
    ext = backend.load_cpu()

    def run():
        res = ext.composite_fwd(m2, conic, wpeak, order, vals, *geom)
        ext.composite_bwd(m2, conic, wpeak, order, vals, *geom, list(res[2:]),
                          torch.ones_like(res[0]), torch.ones_like(res[1]))
    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--twin-repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    os.environ[backend.BACKEND_ENV] = "auto"
    x = torch.zeros(1)
    assert composite.splat_backend(x, backend="cpu") == "cpu", backend.cpu_reason()

    slices = {8: [2 + 4 * k for k in range(8)], 4: [4, 12, 20, 28], 1: [15.5]}
    cases = [(3000, 8, False), (3000, 8, True)]
    cases += [(n, nb, True) for n in (2000, 5000) for nb in (1, 4)]
    print(f"threads: {torch.get_num_threads()}, torch {torch.__version__}, "
          f"CPU: {os.cpu_count()} logical cores visible")
    print("| case | twin (ms) | CPU backend (ms) | speed-up | splat stage alone, fwd+bwd (ms) |")
    print("|---|---:|---:|---:|---:|")
    for n, nb, bwd in cases:
        p = gaussians(n, seed=n)
        cams = axial_cameras(slices[nb], (1.0, 1.0, 1.0))
        t_twin = timed(call_fn(p, cams, bwd, "twin"), args.twin_repeats)
        t_cpu = timed(call_fn(p, cams, bwd, "cpu"), args.repeats)
        t_splat = timed(splat_fn(p, cams), args.repeats) if bwd else float("nan")
        name = (f"{n} G, {nb} slice{'s' if nb > 1 else ''} 96x96, "
                f"{'fwd+bwd' if bwd else 'fwd'}")
        splat = f"{1e3 * t_splat:.2f}" if bwd else "-"
        print(f"| {name} | {1e3 * t_twin:.1f} | {1e3 * t_cpu:.2f} | {t_twin / t_cpu:.0f}x "
              f"| {splat} |", flush=True)


if __name__ == "__main__":
    main()
