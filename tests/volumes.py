"""Small test volumes shared by the Gaussian codec tests."""

from __future__ import annotations

import numpy as np


def blobs(shape=(8, 24, 24), seed=0, peak=250, count=4, max_sigma=3.0, dtype=np.uint8):
    """`count` anisotropic Gaussian blobs at random places, scaled so the brightest voxel is `peak`."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    v = np.zeros(shape)
    for _ in range(count):
        c = rng.uniform(0.25, 0.75, 3) * np.array(shape)
        s = rng.uniform(1.5, max_sigma, 3)
        v += rng.uniform(0.5, 1.0) * np.exp(-0.5 * (((z - c[0]) / s[0]) ** 2 + ((y - c[1]) / s[1]) ** 2
                                                   + ((x - c[2]) / s[2]) ** 2))
    return (v / v.max() * peak).astype(dtype)
