"""The interpolation baselines: what clinical software does with missing slices.

All three work voxel by voxel along z from the training slices alone, on float64:

* ``nearest``: each held-out slice is a copy of the training slice nearest in z (the lower one
  on a tie);
* ``linear``: linear interpolation between the two training slices that bracket it;
* ``cubic``: a cubic spline through all training slices along z (scipy CubicSpline at the
  slices' z positions, which are not evenly spaced; boundary ``not-a-knot`` by default; two
  training slices give the line through them). It may overshoot the data; the prediction is
  stored in the volume's dtype (clipped to its range), as a decoder would.

The first and the last slice are always in training (volbench.sparse.split), so there is no
extrapolation.
"""

from __future__ import annotations

import numpy as np

from ..errors import VolbenchError
from .methods import SparseMethod


def bracket(z: np.ndarray, zq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For query positions zq inside [z[0], z[-1]] (z increasing): indices i0, i1 of the bracketing
    training slices and the weight t of slice i1 (zq = (1 - t) z[i0] + t z[i1])."""
    z = np.asarray(z, dtype=np.float64)
    zq = np.asarray(zq, dtype=np.float64)
    if len(z) < 2 or np.any(zq < z[0]) or np.any(zq > z[-1]):
        raise VolbenchError("interpolation needs training slices on both sides of every held-out slice")
    i1 = np.clip(np.searchsorted(z, zq, side="right"), 1, len(z) - 1)
    i0 = i1 - 1
    t = (zq - z[i0]) / (z[i1] - z[i0])
    return i0, i1, t


def nearest_index(z, zq) -> np.ndarray:
    """For each query position zq, the index of the nearest training slice (a tie takes the lower)."""
    i0, i1, t = bracket(z, zq)
    return np.where(t > 0.5, i1, i0)


def linear_fill(slices: np.ndarray, z, zq) -> np.ndarray:
    """Linear interpolation along z of slices (n, H, W) at z = zq: (len(zq), H, W) float64."""
    i0, i1, t = bracket(z, zq)
    a = slices[i0].astype(np.float64)
    b = slices[i1].astype(np.float64)
    return a + t[:, None, None] * (b - a)


class NearestSlice(SparseMethod):
    name = "nearest"
    display_name = "Nearest slice"
    family = "interpolation"
    table_order = 10

    def reconstruct(self, train, ctx):
        return train.slices[nearest_index(train.z, train.test_z)].astype(np.float64)


class LinearZ(SparseMethod):
    name = "linear"
    display_name = "Linear (z)"
    family = "interpolation"
    table_order = 20

    def reconstruct(self, train, ctx):
        return linear_fill(train.slices, train.z, train.test_z)


class CubicZ(SparseMethod):
    name = "cubic"
    display_name = "Cubic (z)"
    family = "interpolation"
    table_order = 30
    defaults = {"bc_type": "not-a-knot"}  # scipy CubicSpline boundary condition

    def check_params(self):
        if self.params["bc_type"] not in ("not-a-knot", "natural", "clamped"):
            raise VolbenchError(f"sparse method cubic: bc_type must be not-a-knot, natural or clamped, "
                                f"got {self.params['bc_type']!r}")

    def reconstruct(self, train, ctx):
        from scipy.interpolate import CubicSpline

        if len(train.z) < 3:  # a spline through two points is the line through them
            return linear_fill(train.slices, train.z, train.test_z)
        spline = CubicSpline(train.z.astype(np.float64), train.slices.astype(np.float64), axis=0,
                             bc_type=self.params["bc_type"])
        return spline(train.test_z.astype(np.float64))
