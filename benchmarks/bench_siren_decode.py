#!/usr/bin/env python
"""Decode throughput of the SIREN/COIN codec (MVox/s) at the seed-001 size with the 4x256 network.

The decode cost of a SIREN does not depend on what the weights learned, so the network is the
SIREN initialisation (seeded), stored exactly as the codec stores it (float16 by default), and
decoded by the codec's own decode (unpack, rebuild, evaluate every voxel, copy to a host array).

    PYTHONPATH=workflow python benchmarks/bench_siren_decode.py                 # cpu (+ cuda if present)
    PYTHONPATH=workflow python benchmarks/bench_siren_decode.py --device cuda --repeats 5
    PYTHONPATH=workflow python benchmarks/bench_siren_decode.py --device cpu --slices 2

On CPU a full 100x647x813 decode takes many minutes, so --slices decodes only the first N
Z-slices; the throughput per voxel is what is measured, and the full-volume time is extrapolated
from it (printed as such). Results are appended as JSON lines to --out together with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from volbench.codecs import siren  # noqa: E402
from volbench.pipeline import cpu_model  # noqa: E402
from volbench.torchenv import import_torch, resolve_device  # noqa: E402

SEED_SHAPE = (100, 647, 813)  # seed 001, Table 7 (D x H x W)


def machine(torch) -> dict:
    m = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
         "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
         "platform": platform.platform()}
    try:
        m["load_average"] = list(os.getloadavg())
    except OSError:
        pass
    if torch.cuda.is_available():
        m["gpu"] = torch.cuda.get_device_name(0)
        m["cuda"] = torch.version.cuda
    return m


def network(width: int, depth: int, bits: int, seed: int):
    """Header and payload of a SIREN-initialised network, stored as the codec stores it."""
    torch = import_torch("siren")
    gen = torch.Generator().manual_seed(seed)
    tensors = siren.init_tensors(width, depth, 30.0, gen, torch)
    header = siren.make_header(width, depth, bits, 0.0, 65535.0)
    return header, siren.pack_weights(siren.fold_w0(tensors, 30.0), bits)


def run(device: str, shape, header, payload, repeats: int):
    torch = import_torch("siren")
    dev = resolve_device(device)
    # warm-up (CUDA context, kernels, allocator; CPU thread pool): not part of a decode
    siren.SirenCodec.decode(header, payload, (2, 64, 64), np.uint16, device=device)
    times = []
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        out = siren.SirenCodec.decode(header, payload, shape, np.uint16, device=device)
        times.append(time.perf_counter() - t0)
        assert out.shape == tuple(shape) and out.dtype == np.uint16
    return times


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", action="append", help="cpu, cuda (repeatable; default cpu, plus cuda if present)")
    ap.add_argument("--shape", default="x".join(map(str, SEED_SHAPE)), help="full volume ZxYxX")
    ap.add_argument("--slices", type=int, default=2, help="Z-slices decoded on CPU (0 = all)")
    ap.add_argument("--gpu-slices", type=int, default=0, help="Z-slices decoded on CUDA (0 = all)")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--weight-bits", type=int, default=16, choices=(8, 16))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--out", default="results/benchmarks/siren_decode.jsonl", help="JSON lines, appended")
    a = ap.parse_args(argv)

    torch = import_torch("siren")
    if a.threads:
        torch.set_num_threads(a.threads)
    devices = a.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    full = tuple(int(s) for s in a.shape.lower().split("x"))
    header, payload = network(a.width, a.depth, a.weight_bits, seed=0)
    mach = machine(torch)
    nfull = int(np.prod(full))
    rows = []
    for dev in devices:
        if dev.startswith("cuda") and not torch.cuda.is_available():
            print(f"{dev}: CUDA not available here, skipped (figure pending)", file=sys.stderr)
            continue
        nz = a.gpu_slices if dev.startswith("cuda") else a.slices
        nz = full[0] if nz <= 0 else min(nz, full[0])
        shape = (nz,) + full[1:]
        times = run(dev, shape, header, payload, a.repeats)
        nvox = int(np.prod(shape))
        best = min(times)
        row = {"device": dev, "decoded_shape": list(shape), "full_shape": list(full), "voxels": nvox,
               "width": a.width, "depth": a.depth, "weight_bits": a.weight_bits,
               "n_parameters": siren.n_parameters(a.width, a.depth), "repeats": a.repeats,
               "seconds": times, "seconds_best": best, "seconds_median": statistics.median(times),
               "mvox_per_s": nvox / best / 1e6, "full_volume_seconds": nfull / (nvox / best),
               "extrapolated": nz < full[0], "machine": mach}
        rows.append(row)
        if row["extrapolated"]:
            print(f"{dev}: decoded {nz} of {full[0]} slices; the full-volume time is EXTRAPOLATED "
                  f"from the measured throughput", file=sys.stderr)
    print(f"SIREN {a.depth}x{a.width} ({siren.n_parameters(a.width, a.depth)} parameters, "
          f"{a.weight_bits}-bit weights), full volume {'x'.join(map(str, full))} = {nfull / 1e6:.1f} MVox")
    print(f"machine: {mach['cpu']}, {mach['cpu_count']} cores ({mach['torch_threads']} torch threads), "
          f"torch {mach['torch']}" + (f", {mach['gpu']}" if "gpu" in mach else ""))
    print("| device | decoded shape | voxels | seconds (best) | MVox/s | full volume (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ext = " (extrapolated)" if r["extrapolated"] else ""
        print(f"| {r['device']} | {'x'.join(map(str, r['decoded_shape']))} | {r['voxels']} | "
              f"{r['seconds_best']:.3f} | {r['mvox_per_s']:.3f} | {r['full_volume_seconds']:.1f}{ext} |")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    print(f"wrote {len(rows)} row(s) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
