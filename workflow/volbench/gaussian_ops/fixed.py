"""Reproducible voxelization: the decoders' evaluation of a Gaussian mixture, bit-identical by
construction whatever the region of interest, the z-slab or chunk size, the thread count or the
CPU's SIMD width.

The training path (torch_impl.splat_voxels, the CUDA kernels) sums float terms in an order that
depends on the tiling and lets torch pick vectorised or scalar code for ``exp`` per element
position, so two decodes of the same voxel through different ROIs could round differently.
This module avoids every source of such variation:

1. **Per-voxel arithmetic is fixed.** Each (voxel, Gaussian) term is computed from the voxel's
   global index and the Gaussian's parameters by one fixed sequence of IEEE-754 float64 basic
   operations (+, -, *, /, sqrt, round, compare), each correctly rounded on every conforming CPU
   and SIMD path, plus :func:`exp_fixed`, a polynomial built from those same operations.  The
   voxel position is ``index * spacing - (mean - origin)``; nothing depends on the ROI's corner
   or on a tile's corner.
2. **Summation is exact.** Each term is rounded to a multiple of 2^-32 and accumulated in int64:
   integer addition is associative, so the order in which (voxel, Gaussian) pairs arrive (chunk
   size, ROI, threads) cannot change the sum.
3. **The per-Gaussian prelude** (rotation, precision factor, bounding box) uses the same
   operations, once per call, on the whole Gaussian set.

Hence a decode is bit-identical to the crop of the full decode, and to itself on any x86-64 or
ARM CPU, provided the parameters handed in are identical and the CPU runs with IEEE semantics
(no flush-to-zero of subnormals; torch's default).  Terms: a term whose squared Mahalanobis
distance exceeds cutoff^2 is exactly zero, as in the training path; values are float64.

Not differentiable: training uses ops.voxelize.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .torch_impl import _index_range, quat_to_rotmat, roi_box

__all__ = ["exp_fixed", "prepare_fixed", "splat_fixed", "voxelize_fixed", "FIXED_SCALE"]

F64 = torch.float64
#: terms are rounded to multiples of 1 / FIXED_SCALE before the integer sum
FIXED_SCALE = 2.0 ** 32
#: |term| is clamped to this (in the amplitude's units) so a term cannot overflow int64
_TERM_LIMIT = 2.0 ** 24
# (voxel, Gaussian) pairs evaluated at once (~25 float64 temporaries each)
_CHUNK_PAIRS = 1 << 19

# exp: x = n ln2 + r, |r| <= ln2/2 (Cody-Waite with fdlibm's two-part ln2: n * _LN2_HI is exact
# for |n| < 2^20), then the Taylor polynomial of degree 13 (truncation < 5e-18 relative).
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e+00
_EXP_TAYLOR = tuple(1.0 / math.factorial(k) for k in range(14))


def exp_fixed(x: torch.Tensor) -> torch.Tensor:
    """exp(x) in float64 from correctly rounded basic operations only (about 2 ulp; inputs are
    clamped to [-708, 709], so no subnormal or infinite result; NaN stays NaN)."""
    x = x.to(F64).clamp(-708.0, 709.0)
    n = torch.round(x * _INV_LN2)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = torch.full_like(r, _EXP_TAYLOR[-1])
    for c in reversed(_EXP_TAYLOR[:-1]):
        p = p * r + c
    n = torch.where(torch.isfinite(n), n, torch.zeros_like(n))
    two_n = ((n.to(torch.int64) + 1023) << 52).view(F64)  # 2^n, built from its bits
    return p * two_n


def prepare_fixed(means: torch.Tensor, scales: torch.Tensor, quats: torch.Tensor, cutoff: float):
    """(A, half_ext) in float64 for standard deviations ``scales`` (N,3) along the local axes:
    A = diag(1/s) R^T, so |A d|^2 is the squared Mahalanobis distance, and half_ext (N,3) =
    cutoff * sqrt(S_jj), the half extent of the cutoff ellipsoid's bounding box."""
    s = scales.to(F64)
    R = quat_to_rotmat(quats.to(F64))
    A = (1.0 / s).unsqueeze(-1) * R.transpose(-1, -2)
    s2 = s * s
    RR = R * R
    var = (RR[..., 0] * s2[:, None, 0] + RR[..., 1] * s2[:, None, 1]) + RR[..., 2] * s2[:, None, 2]
    return A, float(cutoff) * torch.sqrt(var)


def splat_fixed(means: torch.Tensor, A: torch.Tensor, amps: torch.Tensor, half_ext: torch.Tensor,
                shape: Sequence[int], spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                cutoff: float = 3.0, roi=None, chunk_pairs: int = _CHUNK_PAIRS) -> torch.Tensor:
    """sum_i amps_i exp(-1/2 |A_i (x - mu_i)|^2) (zero beyond ``cutoff``) on voxel x = origin +
    index * spacing of the volume ``shape``, for the indices in ``roi`` (z0, z1, y0, y1, x0, x1)
    (default: all).  Float64, bit-identical for any roi, chunk_pairs and thread count."""
    dev = means.device
    lz, hz, ly, hy, lx, hx = roi_box(shape, roi)
    rz, ry, rx = hz - lz, hy - ly, hx - lx
    nvox = rz * ry * rx
    acc = torch.zeros(nvox, dtype=torch.int64, device=dev)
    if nvox == 0 or means.shape[0] == 0:
        return acc.to(F64).reshape(rz, ry, rx)
    with torch.no_grad():
        org = torch.tensor([float(o) for o in origin], dtype=F64, device=dev)
        sp = torch.tensor([float(s) for s in spacing], dtype=F64, device=dev)
        mu = means.to(F64) - org  # the Gaussian's position relative to voxel (0, 0, 0)
        A = A.to(F64).reshape(-1, 9)
        amp = amps.to(F64).reshape(-1)
        lo, hi = _index_range(mu, half_ext.to(F64), sp, torch.tensor([int(s) for s in shape], device=dev))
        lo = torch.maximum(lo, torch.tensor([lz, ly, lx], device=dev))
        hi = torch.minimum(hi, torch.tensor([hz - 1, hy - 1, hx - 1], device=dev))
        ext = (hi - lo + 1).clamp_min(0)
        count = ext[:, 0] * ext[:, 1] * ext[:, 2]
        cum = torch.cumsum(count, 0)
        total = int(cum[-1])
        c2 = float(cutoff) ** 2
        step = max(1, int(chunk_pairs))
        for p0 in range(0, total, step):
            p = torch.arange(p0, min(total, p0 + step), device=dev)
            g = torch.searchsorted(cum, p, right=True)  # Gaussian of each pair
            local = p - (cum[g] - count[g])
            e = ext[g]
            ix = lo[g, 2] + local % e[:, 2]
            local = local // e[:, 2]
            iy = lo[g, 1] + local % e[:, 1]
            iz = lo[g, 0] + local // e[:, 1]
            d0 = iz.to(F64) * sp[0] - mu[g, 0]
            d1 = iy.to(F64) * sp[1] - mu[g, 1]
            d2 = ix.to(F64) * sp[2] - mu[g, 2]
            Ag = A[g]
            m = None
            for k in range(3):
                yk = (Ag[:, 3 * k] * d0 + Ag[:, 3 * k + 1] * d1) + Ag[:, 3 * k + 2] * d2
                m = yk * yk if m is None else m + yk * yk
            sel = torch.nonzero(m <= c2).reshape(-1)  # NaN distances are never inside
            if sel.numel() == 0:
                continue
            val = amp[g[sel]] * exp_fixed(-0.5 * m[sel])
            val = torch.where(torch.isfinite(val), val, torch.zeros_like(val))
            q = torch.round(val.clamp(-_TERM_LIMIT, _TERM_LIMIT) * FIXED_SCALE).to(torch.int64)
            lin = ((iz[sel] - lz) * ry + (iy[sel] - ly)) * rx + (ix[sel] - lx)
            acc.index_add_(0, lin, q)
    return (acc.to(F64) * (1.0 / FIXED_SCALE)).reshape(rz, ry, rx)


def voxelize_fixed(means, log_scales, quats, amps, shape, spacing=(1.0, 1.0, 1.0),
                   origin=(0.0, 0.0, 0.0), cutoff: float = 3.0, roi=None) -> torch.Tensor:
    """ops.voxelize(..., deterministic=True): the same function as ops.voxelize, evaluated by
    :func:`splat_fixed` (float64, not differentiable)."""
    with torch.no_grad():
        A, half_ext = prepare_fixed(means, exp_fixed(log_scales), quats, cutoff)
        return splat_fixed(means, A, amps, half_ext, shape, spacing, origin, cutoff, roi)
