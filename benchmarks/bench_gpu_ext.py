#!/usr/bin/env python
"""Throughput of the Gaussian operators (volbench.gaussian_ops.ops): voxelizer decode and slice
rasterizer, on the CUDA kernels of gpu_ext/ (or the PyTorch twin with --quick / on CPU).

    PYTHONPATH=workflow python benchmarks/bench_gpu_ext.py                      # full sizes, GPU
    PYTHONPATH=workflow python benchmarks/bench_gpu_ext.py --out docs/benchmarks-gpu/gpu_ext.json \
        --update-doc docs/benchmarks-gpu.md                                       # write figures
    PYTHONPATH=workflow python benchmarks/bench_gpu_ext.py --quick               # smoke, CPU twin

Cases (full sizes; --quick shrinks every one to a few thousand voxels / pixels):
  vox_volmicro   20,693 Gaussians on 100x647x813 voxels (seed 001's neuron volume and count)
  vox_200k       200,000 Gaussians, same grid
  vox_1m         1,000,000 Gaussians, same grid
  vox_1gvox      1000x1000x1000 voxels (1e9) at the VolMicro density (393,390 Gaussians),
                 decoded in z-slabs of --slab slices with ops.voxelize(roi=...) into one
                 preallocated device tensor (4 GB float32)
  ras_*          axial slices of 647x813 pixels rendered with mode="focus" (sigma_z = 1 voxel),
                 forward and forward+backward (loss = sum of the slices), B slices per call

Gaussians are synthetic and seeded (the cost depends on how many Gaussians touch a tile, not on
what they learned): means uniform in the grid, per-axis standard deviations log-uniform in
--scale-range voxels (default 1..6), uniformly random rotations, amplitudes in [0.05, 1], cutoff 3.
Timing: CUDA events around the whole operator call (per-Gaussian prelude, tile lists, kernels),
after --warmup calls, median of --repeats.  Every voxelizer case is checked against the float64
twin on a small ROI before it is timed (max error reported).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

from volbench.gaussian_ops import backend, ops  # noqa: E402
from volbench.gaussian_ops import torch_impl as twin  # noqa: E402

VOLMICRO_SHAPE = (100, 647, 813)
VOLMICRO_N = 20_693
GOAL_MVOX = 5000.0  # issue 4: >= 5,000 MVox/s for the VolMicro case on an H100
DOC_BEGIN = "<!-- bench_gpu_ext:begin -->"
DOC_END = "<!-- bench_gpu_ext:end -->"


def make_gaussians(n, shape, scale_range, seed, device, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    ext = torch.tensor(shape, dtype=torch.float64)
    means = torch.rand(n, 3, generator=g, dtype=torch.float64) * (ext - 1)
    lo, hi = (math.log(s) for s in scale_range)
    ls = lo + (hi - lo) * torch.rand(n, 3, generator=g, dtype=torch.float64)
    q = torch.randn(n, 4, generator=g, dtype=torch.float64)
    a = 0.05 + 0.95 * torch.rand(n, generator=g, dtype=torch.float64)
    return [t.to(device=device, dtype=dtype) for t in (means, ls, q, a)]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, warmup, repeats):
    """Median seconds of fn() (CUDA events on a GPU, perf_counter on CPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def check_roi(params, shape, roi):
    """Max |ops - float64 twin| / max|twin| on a small ROI."""
    got = ops.voxelize(*params, shape, roi=roi).double().cpu()
    ref = twin.voxelize(*[p.double().cpu() for p in params], shape, roi=roi)
    scale = ref.abs().max().item()
    return (got - ref).abs().max().item() / scale if scale > 0 else (got - ref).abs().max().item()


def bench_voxelize(name, n, shape, args, device, slab=None):
    params = make_gaussians(n, shape, args.scale_range, args.seed, device)
    nvox = math.prod(shape)
    probe = (0, min(shape[0], 8), 0, min(shape[1], 48), 0, min(shape[2], 48))
    err = check_roi(params, shape, probe)
    with torch.no_grad():
        if slab is None:
            fn = lambda: ops.voxelize(*params, shape)  # noqa: E731
        else:
            out = torch.empty(shape, dtype=torch.float32, device=device)

            def fn():
                for z0 in range(0, shape[0], slab):
                    z1 = min(shape[0], z0 + slab)
                    out[z0:z1] = ops.voxelize(*params, shape,
                                              roi=(z0, z1, 0, shape[1], 0, shape[2]))
        t, times = timed(fn, device, args.warmup, args.repeats)
    row = {"case": name, "gaussians": n, "grid": "x".join(map(str, shape)), "voxels": nvox,
           "slab": slab, "seconds": t, "mvox_per_s": nvox / t / 1e6, "all_seconds": times,
           "roi_check_max_rel_err": err}
    print(f"{name:14s} N={n:>9,d} grid={row['grid']:>16s}"
          + (f" slabs of {slab}" if slab else "")
          + f"  {t * 1e3:10.4g} ms  {row['mvox_per_s']:10.4g} MVox/s  (check {err:.1e})",
          flush=True)
    del params
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def bench_raster(name, n, vol_shape, batch, args, device):
    params = make_gaussians(n, vol_shape, args.scale_range, args.seed, device)
    H, W = vol_shape[1], vol_shape[2]
    g = torch.Generator().manual_seed(args.seed + 1)
    idx = torch.randint(0, vol_shape[0], (batch,), generator=g).tolist()
    cams = ops.axial_cameras(idx, (1.0, 1.0, 1.0), device=device)

    def render(ps):
        return ops.rasterize_slices(*ps, cams, (H, W), (1.0, 1.0), mode="focus", sigma_z=1.0,
                                    cutoff=3.0, opacity_threshold=1e-4)

    with torch.no_grad():
        t_f, _ = timed(lambda: render(params), device, args.warmup, args.repeats)
    leaves = [p.clone().requires_grad_() for p in params]

    def fwd_bwd():
        for p in leaves:
            p.grad = None
        render(leaves).sum().backward()

    t_fb, _ = timed(fwd_bwd, device, args.warmup, args.repeats)
    row = {"case": name, "gaussians": n, "image": f"{H}x{W}", "batch": batch,
           "fwd_seconds": t_f, "fwd_slices_per_s": batch / t_f,
           "fwdbwd_seconds": t_fb, "fwdbwd_slices_per_s": batch / t_fb}
    print(f"{name:14s} N={n:>9,d} image={H}x{W} B={batch:<3d}  fwd {batch / t_f:9.4g} slices/s"
          f"  fwd+bwd {batch / t_fb:9.4g} slices/s", flush=True)
    del params, leaves
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def environment(device):
    env = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "python": platform.python_version(), "device": str(device),
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
           "kernels": "cuda" if (device.type == "cuda" and backend.available()) else "twin",
           "command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])}
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                           capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        env["git_commit"] = None
    return env


def markdown(result):
    env = result["environment"]
    lines = [f"Measured {env['date']} on **{env['gpu'] or env['device']}** "
             f"(kernels: {env['kernels']}, torch {env['torch']}, CUDA {env['torch_cuda']}, "
             f"commit {env['git_commit']}).", "", f"Command: `{env['command']}`", "",
             "| voxelizer case | Gaussians | grid | time (ms) | MVox/s | ROI check (max rel. err) |",
             "|---|---:|---|---:|---:|---:|"]
    for r in result["voxelize"]:
        grid = r["grid"] + (f" (z-slabs of {r['slab']})" if r["slab"] else "")
        lines.append(f"| {r['case']} | {r['gaussians']:,} | {grid} | {r['seconds'] * 1e3:.4g} | "
                     f"{r['mvox_per_s']:.4g} | {r['roi_check_max_rel_err']:.1e} |")
    lines += ["", "| rasterizer case | Gaussians | image | slices/call | forward slices/s | "
              "forward+backward slices/s |", "|---|---:|---|---:|---:|---:|"]
    for r in result["rasterize"]:
        lines.append(f"| {r['case']} | {r['gaussians']:,} | {r['image']} | {r['batch']} | "
                     f"{r['fwd_slices_per_s']:.4g} | {r['fwdbwd_slices_per_s']:.4g} |")
    goal = result.get("goal")
    if goal:
        lines += ["", f"Goal (VolMicro case >= {GOAL_MVOX:,.0f} MVox/s on an H100): "
                  f"{goal['mvox_per_s']:.1f} MVox/s, {'met' if goal['met'] else 'NOT met'}."]
    return "\n".join(lines) + "\n"


def update_doc(doc: Path, md: str):
    text = doc.read_text()
    if DOC_BEGIN not in text or DOC_END not in text:
        raise SystemExit(f"bench_gpu_ext: {doc} lacks the markers {DOC_BEGIN} / {DOC_END}")
    head, rest = text.split(DOC_BEGIN, 1)
    _, tail = rest.split(DOC_END, 1)
    doc.write_text(head + DOC_BEGIN + "\n" + md + DOC_END + tail)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (smoke test; runs the twin on CPU in seconds)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--only", default="vox,ras", help="comma list of vox, ras")
    p.add_argument("--skip-large", action="store_true", help="skip the 1M and 1e9-voxel cases")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--slab", type=int, default=64, help="z-slices per chunk of the 1e9 case")
    p.add_argument("--scale-range", type=float, nargs=2, default=(1.0, 6.0),
                   help="per-axis standard deviations, voxels (log-uniform)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None,
                   help="write the results as JSON here and as markdown next to it (.md)")
    p.add_argument("--update-doc", type=Path, default=None,
                   help="replace the results block of this markdown file (docs/benchmarks-gpu.md)")
    args = p.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not backend.available():
        print(f"bench_gpu_ext: warning: CUDA extension unavailable ({backend.reason()}); "
              "timing the PyTorch twin on the GPU", file=sys.stderr)
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.repeats is None:
        args.repeats = 1 if args.quick else 10
    only = set(args.only.split(","))

    if args.quick:
        vol = (8, 24, 28)
        if args.scale_range == p.get_default("scale_range"):
            args.scale_range = (0.6, 1.5)
        vox_cases = [("vox_volmicro", 20, vol, None), ("vox_200k", 60, vol, None),
                     ("vox_1m", 120, vol, None), ("vox_1gvox", 40, (16, 24, 28), 8)]
        ras_cases = [("ras_B1", 40, vol, 1), ("ras_B4", 40, vol, 4)]
    else:
        vol = VOLMICRO_SHAPE
        density = VOLMICRO_N / math.prod(VOLMICRO_SHAPE)
        giga = (1000, 1000, 1000)
        vox_cases = [("vox_volmicro", VOLMICRO_N, vol, None), ("vox_200k", 200_000, vol, None),
                     ("vox_1m", 1_000_000, vol, None),
                     ("vox_1gvox", round(density * math.prod(giga)), giga, args.slab)]
        ras_cases = [("ras_volmicro_B1", VOLMICRO_N, vol, 1), ("ras_200k_B1", 200_000, vol, 1),
                     ("ras_200k_B8", 200_000, vol, 8)]
        if args.skip_large:
            vox_cases = [c for c in vox_cases if c[0] not in ("vox_1m", "vox_1gvox")]

    env = environment(device)
    print(f"bench_gpu_ext: device {env['gpu'] or device} kernels={env['kernels']} "
          f"torch {env['torch']}", flush=True)
    result = {"environment": env, "settings": {k: (list(v) if isinstance(v, tuple) else v)
                                               for k, v in vars(args).items()
                                               if k not in ("out", "update_doc")},
              "voxelize": [], "rasterize": []}
    if "vox" in only:
        for name, n, shape, slab in vox_cases:
            result["voxelize"].append(bench_voxelize(name, n, shape, args, device, slab))
    if "ras" in only:
        for name, n, shape, batch in ras_cases:
            result["rasterize"].append(bench_raster(name, n, shape, batch, args, device))
    vm = [r for r in result["voxelize"] if r["case"] == "vox_volmicro"]
    if vm and not args.quick:
        result["goal"] = {"mvox_per_s": vm[0]["mvox_per_s"],
                          "met": vm[0]["mvox_per_s"] >= GOAL_MVOX, "target": GOAL_MVOX}
        print(f"goal: VolMicro case {vm[0]['mvox_per_s']:.1f} MVox/s "
              f"({'met' if result['goal']['met'] else 'NOT met'}, target {GOAL_MVOX:.0f})")
    for r in result["voxelize"]:
        if not r["roi_check_max_rel_err"] <= 1e-3:
            print(f"bench_gpu_ext: {r['case']}: ROI check failed "
                  f"(max rel. err {r['roi_check_max_rel_err']:.3g})", file=sys.stderr)
            result["check_failed"] = True
    md = markdown(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(md)
        print(f"bench_gpu_ext: wrote {args.out} and {args.out.with_suffix('.md')}")
    if args.update_doc:
        update_doc(args.update_doc, md)
        print(f"bench_gpu_ext: updated {args.update_doc}")
    return 1 if result.get("check_failed") else 0


if __name__ == "__main__":
    sys.exit(main())
