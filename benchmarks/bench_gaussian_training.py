#!/usr/bin/env python
"""Whole training iterations of the Gaussian codecs, PyTorch twin vs the compiled CPU backend,
with a profile of where an iteration's time goes.  Prints markdown; not a timed test.

    bash scripts/in-env python benchmarks/bench_gaussian_training.py            # 2 threads
    bash scripts/in-env python benchmarks/bench_gaussian_training.py --threads 1 --profile

Cases (the default run's volume size, 32x96x96 synthetic neuron, float32, seed 0):
  * GaussianPile: 5,000 Gaussians (data initialisation), one 96x96 focus slice per iteration,
    loss L1 + 0.2 D-SSIM, Adam, the densification statistics; the 4-slice evaluation render
    every 20 iterations (the demo preset's log_every) amortised into the figure; densification
    itself off so that N stays 5,000.
  * VolMicro: 1,000 Gaussians on the whole volume (the demo preset's sample_ratio 1), edge-weighted
    loss, the sparsity and scale terms, the gradient EMA; gate pre-training excluded (before the
    clock), densification off.
The time per iteration is read from the codec's own history (seconds between the log rows of
iteration 1 and the last iteration, divided by the iterations between them), so set-up,
initialisation and the final decode are not counted.  VOLBENCH_GAUSSIAN_BACKEND=twin selects the
twin; --profile prints torch.profiler's top operators over the CPU backend's iterations.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from volbench.codecs.base import VolumeInfo, get_codec  # noqa: E402
from volbench.datasets import synthetic  # noqa: E402
from volbench.gaussian_ops import backend, ops  # noqa: E402

OFF = 10**9


def cases(twin: bool):
    # fewer iterations on the twin (slow); the per-iteration figure does not depend on the count
    gp_it = 41 if twin else 201
    vm_it = 21 if twin else 101
    return [
        ("GaussianPile, 5,000 G, 96x96 slice", "gaussianpile",
         dict(preset="demo", iterations=gp_it, n_gaussians=5000, max_gaussians=5000, init="data",
              densify_from=OFF, densify_until=OFF, log_every=20, progress=False)),
        ("VolMicro, 1,000 G, 32x96x96 volume", "volmicro",
         dict(preset="demo", iterations=vm_it, n_gaussians=1000, max_gaussians=1000,
              densify_from=OFF, densify_until=OFF, log_every=10, progress=False)),
    ]


def per_iteration(history: Path) -> float:
    rows = [r for r in csv.DictReader(open(history)) if r.get("stage", "train") == "train"]
    first, last = rows[0], rows[-1]
    return (float(last["seconds"]) - float(first["seconds"])) / (int(last["iteration"]) - int(first["iteration"]))


def run_case(codec: str, params: dict, vol: np.ndarray, threads: int) -> float:
    with tempfile.TemporaryDirectory() as wd:
        info = VolumeInfo(name="neuron", spacing=(1.0, 0.5, 0.5), seed=0, device="cpu", threads=threads,
                          workdir=Path(wd))
        get_codec(codec)(**params).encode(vol, info)
        return per_iteration(Path(wd) / "history.csv")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--skip-twin", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    vol = synthetic.neuron(shape=(32, 96, 96), seed=1)
    res = {}
    for name in ("twin", "cpu"):
        if name == "twin" and a.skip_twin:
            continue
        os.environ[backend.BACKEND_ENV] = "twin" if name == "twin" else "auto"
        for label, codec, params in cases(name == "twin"):
            res[(label, name)] = run_case(codec, params, vol, a.threads)
    os.environ[backend.BACKEND_ENV] = "auto"
    print(f"threads: {a.threads}, torch {torch.__version__}, backend for CPU tensors: "
          f"{ops.backend_name('cpu')}\n")
    print("| case | twin (ms / iteration) | CPU backend (ms / iteration) | speed-up |")
    print("|---|---:|---:|---:|")
    for label, _, _ in cases(False):
        t, c = res.get((label, "twin")), res[(label, "cpu")]
        tw = f"{t * 1e3:.1f}" if t else "-"
        sp = f"{t / c:.1f}x" if t else "-"
        print(f"| {label} | {tw} | {c * 1e3:.1f} | {sp} |")
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        for label, codec, params in cases(False):
            p = dict(params, iterations=41 if codec == "gaussianpile" else 21)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run_case(codec, p, vol, a.threads)
            print(f"\n#### profile: {label} (whole encode incl. set-up, {p['iterations']} iterations)\n")
            print("```")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))
            print("```")


if __name__ == "__main__":
    main()
