"""Reproducibility checks shared by the codec tests (docs/reproducibility.md states the bounds).

``decode_elsewhere`` decodes a file in a fresh process that emulates another machine: torch's
CPU kernels restricted to their scalar build (ATEN_CPU_CAPABILITY=default, where this machine
runs AVX2 or AVX-512 code) and a different thread count.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

WORKFLOW = Path(__file__).resolve().parents[1] / "workflow"

#: ROIs (z0, z1, y0, y1, x0, x1) of a (16, 32, 32) volume that cut the 8-voxel tiles, with odd
#: sizes, single voxels and single rows
ROIS_16_32_32 = [(3, 11, 5, 29, 0, 17), (0, 16, 7, 9, 31, 32), (15, 16, 0, 32, 0, 32),
                 (1, 2, 13, 14, 21, 22), (5, 14, 8, 16, 9, 25), (0, 16, 0, 32, 0, 32)]


def rois_for(shape) -> list[tuple[int, ...]]:
    """The ROIS_16_32_32 boxes clipped to ``shape`` (non-empty ones)."""
    out = []
    for r in ROIS_16_32_32:
        box = []
        for a in range(3):
            lo = min(r[2 * a], shape[a] - 1)
            box += [lo, max(lo + 1, min(r[2 * a + 1], shape[a]))]
        out.append(tuple(box))
    return out


def assert_rois_are_crops(decode_roi, source, full: np.ndarray) -> None:
    """Every ROI decode is bit-identical to the crop of the full decode."""
    for r in rois_for(full.shape):
        part = decode_roi(source, r, device="cpu")
        assert part.dtype == full.dtype, r
        crop = full[r[0]:r[1], r[2]:r[3], r[4]:r[5]]
        assert np.array_equal(part, crop), (r, int(np.count_nonzero(part != crop)))


def decode_elsewhere(path, out_npy, threads: int = 1, capability: str = "default") -> np.ndarray:
    """Decode ``path`` in a fresh process with ``threads`` torch threads and
    ATEN_CPU_CAPABILITY=``capability``; returns the array."""
    code = ("import sys, numpy as np, torch; torch.set_num_threads(int(sys.argv[3])); "
            "from volbench.codecs import decode_file; "
            "a, _ = decode_file(sys.argv[1], device='cpu'); np.save(sys.argv[2], a)")
    env = dict(os.environ, PYTHONPATH=str(WORKFLOW), ATEN_CPU_CAPABILITY=capability)
    subprocess.run([sys.executable, "-c", code, str(path), str(out_npy), str(threads)], check=True,
                   env=env, timeout=300)
    return np.load(out_npy)
