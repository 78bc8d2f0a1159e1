#!/usr/bin/env python
"""Benchmark of the Gaussian codecs against SIREN (issue 6, item 7), for an H100-class GPU.

For each volume (a 16-bit neuron-like volume of 100x647x813, seed 001 Table 7, and an
ultrasound-like 128x512x512 uint8 volume) and each codec (volmicro, gaussianpile, gs3d_slice,
siren; paper presets), in the same run:

* PSNR at 10k and 30k iterations: one training run per iteration count (the learning-rate
  schedules depend on the total), PSNR of the decoded file (3D, on the [min, max] range);
* time to reach the final PSNR: from the 30k run's history.csv, the first logged time at which
  the training PSNR is within 0.1 dB of its last logged value;
* decode throughput: decode of the 30k file from its bytes (unpack + voxelize / network
  evaluation + copy to host), median of --repeats runs, in MVox/s.

    PYTHONPATH=workflow python benchmarks/bench_gaussian_codecs.py --device cuda \\
        --out results/bench/gaussian_codecs_h100.json --figdir docs/figures
    PYTHONPATH=workflow python benchmarks/bench_gaussian_codecs.py --quick     # CPU smoke, tiny

--quick: 12x48x48 volumes, the demo presets with 20 and 40 iterations, on CPU; it checks the
script end to end, its numbers mean nothing. The device name is printed with every table and
stored in the JSON; --figdir writes PSNR-versus-time curves (PNG) named after the device.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from volbench.codecs.base import VolumeInfo, decode_bytes, encode_volume  # noqa: E402
from volbench.datasets import synthetic  # noqa: E402
from volbench.metrics import psnr_3d  # noqa: E402
from volbench.pipeline import cpu_model  # noqa: E402

VOLUMES = {
    "neuron": dict(spec={"generator": "neuron", "shape": [100, 647, 813], "seed": 1}, spacing=(0.54, 0.54, 0.54),
                   sigma_z=None),
    "ultrasound": dict(spec={"generator": "ultrasound", "shape": [128, 512, 512], "seed": 3},
                       spacing=(1.0, 0.3, 0.3), sigma_z=1.5),
}
QUICK_SHAPE = [12, 48, 48]
CODECS = ("volmicro", "gaussianpile", "gs3d_slice", "siren")


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_model()


def params_for(codec: str, iterations: int, quick: bool) -> dict:
    if codec == "siren":
        p = {"preset": "demo" if quick else "paper", "iterations": iterations}
        if not quick:
            p["log_every"] = 100
        return p
    p = {"preset": "demo" if quick else "paper", "iterations": iterations, "progress": True}
    if quick:
        p.update(densify_from=5, densify_until=iterations // 2, densify_interval=5, log_every=5)
        if codec == "volmicro":
            p.update(n_gaussians=100, max_gaussians=200, gate_iterations=20, crop=16)
        else:
            p.update(n_gaussians=200, max_gaussians=300, eval_slices=4)
    else:  # finer history for the time-to-PSNR figure
        p["log_every"] = 100 if codec == "volmicro" else 250
    return p


def read_history(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for r in csv.DictReader(open(path)):
        if r.get("stage") not in (None, "", "train"):  # volbench.history: one schema for every codec
            continue
        try:
            rows.append({"iteration": int(r["iteration"]), "psnr": float(r["psnr"]), "seconds": float(r["seconds"])})
        except (TypeError, ValueError):
            continue
    return rows


def time_to_final(hist: list[dict], tol_db: float = 0.1) -> float:
    good = [h for h in hist if math.isfinite(h["psnr"])]
    if not good:
        return float("nan")
    final = good[-1]["psnr"]
    for h in good:
        if h["psnr"] >= final - tol_db:
            return h["seconds"]
    return good[-1]["seconds"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--quick", action="store_true", help="CPU smoke run on tiny volumes")
    ap.add_argument("--codecs", default=",".join(CODECS))
    ap.add_argument("--datasets", default="neuron,ultrasound")
    ap.add_argument("--iterations", type=int, nargs="+", default=None, help="default 10000 30000 (quick: 20 40)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("VOLBENCH_THREADS", "2")))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write the results as JSON")
    ap.add_argument("--figdir", type=Path, help="write PSNR-versus-time figures (PNG) here")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*volbench_gpu_ext unavailable.*")
    import torch

    device = args.device or ("cpu" if args.quick or not torch.cuda.is_available() else "cuda")
    iters = args.iterations or ([20, 40] if args.quick else [10_000, 30_000])
    name = device_name(device)
    from volbench.gaussian_ops import backend

    ext = backend.load() is not None
    print(f"device: {name} ({device}); gpu_ext {'loaded' if ext else 'not loaded (PyTorch twin)'}", flush=True)
    if device.startswith("cuda") and not ext:
        print("warning: the CUDA extension is not loaded: the Gaussian codecs run the PyTorch twin", flush=True)
    out = {"device": device, "device_name": name, "gpu_ext": ext, "quick": args.quick, "iterations": iters,
           "torch": torch.__version__, "cuda": torch.version.cuda, "results": {}}
    for ds in args.datasets.split(","):
        d = VOLUMES[ds]
        spec = dict(d["spec"], shape=QUICK_SHAPE) if args.quick else dict(d["spec"])
        vol = synthetic.generate(spec, ds)
        print(f"\n{ds} {vol.shape} {vol.dtype} ({vol.size / 1e6:.1f} MVox)", flush=True)
        res = out["results"][ds] = {"shape": list(vol.shape), "dtype": str(vol.dtype), "codecs": {}}
        for codec in args.codecs.split(","):
            row = {"psnr": {}, "bytes": {}, "train_seconds": {}}
            for n in iters:
                with tempfile.TemporaryDirectory() as wd:
                    info = VolumeInfo(name=ds, spacing=d["spacing"], sigma_z=d["sigma_z"], seed=args.seed,
                                      device=device, threads=args.threads, workdir=Path(wd))
                    t0 = time.perf_counter()
                    data, _ = encode_volume(codec, params_for(codec, n, args.quick), vol, info)
                    row["train_seconds"][n] = time.perf_counter() - t0
                    hist = read_history(Path(wd) / "history.csv")
                rec, _ = decode_bytes(data, device=device)
                row["psnr"][n] = psnr_3d(vol, rec, float(vol.max()) - float(vol.min()))
                row["bytes"][n] = len(data)
                print(f"  {codec:<13} {n:>6} it: {row['psnr'][n]:.2f} dB, {len(data)} B, "
                      f"{row['train_seconds'][n]:.1f} s", flush=True)
            row["history"] = hist
            row["time_to_final_psnr_s"] = time_to_final(hist)
            times = []
            for _ in range(max(1, args.repeats)):
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                decode_bytes(data, device=device)
                times.append(time.perf_counter() - t0)
            row["decode_seconds"] = statistics.median(times)
            row["decode_mvox_s"] = vol.size / row["decode_seconds"] / 1e6
            res["codecs"][codec] = row
            print(f"  {codec:<13} time to final PSNR {row['time_to_final_psnr_s']:.1f} s, decode "
                  f"{row['decode_mvox_s']:.2f} MVox/s", flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(out, indent=1, default=str))
    print("\n" + table(out))
    if args.figdir:
        figures(out, args.figdir)
    return 0


def table(out) -> str:
    a, b = out["iterations"][0], out["iterations"][-1]
    lines = [f"Device: {out['device_name']} ({out['device']}, gpu_ext {'loaded' if out['gpu_ext'] else 'twin'})", "",
             f"| volume | codec | PSNR @{a} | PSNR @{b} | time to final PSNR (s) | decode MVox/s | bytes @{b} |",
             "|---|---|---|---|---|---|---|"]
    for ds, res in out["results"].items():
        for codec, r in res["codecs"].items():
            lines.append(f"| {ds} | {codec} | {r['psnr'][a]:.2f} | {r['psnr'][b]:.2f} | "
                         f"{r['time_to_final_psnr_s']:.1f} | {r['decode_mvox_s']:.2f} | {r['bytes'][b]} |")
    return "\n".join(lines)


def figures(out, figdir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figdir.mkdir(parents=True, exist_ok=True)
    tag = "".join(c if c.isalnum() else "_" for c in out["device_name"]).strip("_").lower()
    for ds, res in out["results"].items():
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for codec, r in res["codecs"].items():
            h = r["history"]
            if h:
                ax.plot([x["seconds"] for x in h], [x["psnr"] for x in h], label=codec)
        ax.set_xlabel("training time (s)")
        ax.set_ylabel("training PSNR (dB)")
        ax.set_title(f"{ds}: {out['device_name']}", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = figdir / f"gaussian_codecs_{ds}_{tag}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
