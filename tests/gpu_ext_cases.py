"""Test cases of the gpu_ext kernels, shared by the CUDA parity tests (test_gpu_ext_parity.py) and
the CPU-emulated kernel tests (test_gpu_ext_emulated.py), and their comparison helpers."""

from __future__ import annotations

import math

import torch

from volbench.gaussian_ops import ops
from volbench.gaussian_ops import torch_impl as twin

D64 = torch.float64
VOX_SPACING = (1.2, 1.0, 0.9)
VOX_ORIGIN = (-0.5, 0.25, 0.0)
FAR_ORIGIN = (1.0e4, -2.0e4 + 0.3, 1.0e4 + 0.7)


def gaussians(n, lo, hi, scale_range=(0.4, 2.0), seed=0):
    g = torch.Generator().manual_seed(seed)
    lo, hi = torch.tensor(lo, dtype=D64), torch.tensor(hi, dtype=D64)
    means = lo + (hi - lo) * torch.rand(n, 3, generator=g, dtype=D64)
    s0, s1 = scale_range
    ls = torch.log(s0 + (s1 - s0) * torch.rand(n, 3, generator=g, dtype=D64))
    quats = torch.randn(n, 4, generator=g, dtype=D64)
    amps = 0.2 + torch.rand(n, generator=g, dtype=D64)
    return [means, ls, quats, amps]


def needles(centres, seed=1):
    """Needle-thin, rotated Gaussians (long 3, thin 0.12) at the given centres."""
    g = torch.Generator().manual_seed(seed)
    c = torch.tensor(centres, dtype=D64)
    n = c.shape[0]
    ls = torch.log(torch.tensor([3.0, 0.12, 0.2], dtype=D64)).expand(n, 3).clone()
    return [c, ls, torch.randn(n, 4, generator=g, dtype=D64), torch.full((n,), 0.8, dtype=D64)]


def cat(*sets):
    return [torch.cat([s[i] for s in sets]) for i in range(4)]


def with_nan_means(params, rows):
    """Means of the given rows set to NaN / +-inf: such Gaussians are culled (no tile, no term)."""
    means = params[0].clone()
    bad = [math.nan, math.inf, -math.inf]
    for k, r in enumerate(rows):
        means[r, k % 3] = bad[k % 3]
    return [means] + params[1:]


def shifted(params, offset):
    """Means moved by offset and rounded to float32: far from 0 the rounding of the inputs
    (~1e-3 at 1e4) would otherwise dominate every float32-vs-float64 comparison."""
    means = (params[0] + torch.tensor(offset, dtype=D64)).to(torch.float32).to(D64)
    return [means] + params[1:]


# name -> (params, shape, roi, origin); spacing VOX_SPACING
VOX_CASES = {
    "one": (gaussians(1, [5, 6, 7], [5.1, 6.1, 7.1], seed=1), (12, 13, 14), None, VOX_ORIGIN),
    "straddling": (gaussians(60, [0, 0, 0], [20, 24, 28], seed=2), (20, 24, 28), None, VOX_ORIGIN),
    "needles": (cat(gaussians(10, [0, 0, 0], [16, 16, 16], seed=3),
                    needles([[7.9, 8.0, 8.1], [3.5, 12.2, 15.9], [12.0, 4.0, 7.99]])),
                (17, 16, 18), None, VOX_ORIGIN),
    # Gaussians in one corner: most tiles empty
    "empty_tiles": (gaussians(15, [0, 0, 0], [5, 5, 5], seed=4), (30, 33, 35), None, VOX_ORIGIN),
    "roi": (gaussians(80, [0, 0, 0], [30, 30, 30], seed=5), (30, 30, 30), (7, 19, 3, 30, 0, 17),
            VOX_ORIGIN),
    # no edge a multiple of 8, one shorter than a tile
    "odd_sizes": (gaussians(40, [0, 0, 0], [15, 7, 20], (0.3, 1.5), seed=7), (13, 7, 19), None,
                  VOX_ORIGIN),
    "nan_means": (with_nan_means(gaussians(30, [0, 0, 0], [12, 14, 10], seed=9), [2, 11, 17]),
                  (12, 14, 10), None, VOX_ORIGIN),
    # > 512 Gaussians in one 8^3 tile: the tile's list takes two shared-memory batches
    "crowded": (gaussians(600, [1, 1, 1], [8.0, 7.5, 6.5], (0.25, 0.6), seed=10), (11, 9, 13),
                None, VOX_ORIGIN),
    # absolute coordinates ~1e4: float32 positions would be ~1e-3 off
    "far_origin": (shifted(gaussians(50, [0, 0, 0], [16, 12, 20], seed=18), FAR_ORIGIN),
                   (14, 12, 17), None, FAR_ORIGIN),
    "larger": (gaussians(1500, [0, 0, 0], [40, 64, 64], (0.5, 2.5), seed=6), (40, 64, 64), None,
               VOX_ORIGIN),
}

RASTER_PIXEL_SIZE = (1.0, 0.9)

# name -> (params, image shape); cameras("axial"/"rotated")
RASTER_CASES = {
    "one": (gaussians(1, [5, 8, 9], [5.1, 8.1, 9.1], seed=11), (20, 23)),
    "straddling": (gaussians(150, [0, 0, 0], [20, 40, 37], seed=12), (40, 37)),
    "needles": (cat(gaussians(20, [0, 0, 0], [12, 20, 20], seed=13),
                    needles([[3.5, 15.9, 16.1], [7.0, 8.0, 31.9], [0.2, 16.0, 16.0]], seed=14)),
                (33, 35)),
    "empty_tiles": (gaussians(20, [0, 0, 0], [12, 6, 6], seed=15), (50, 64)),
    # > 256 (camera, Gaussian) items in the first 16x16 tile of the axial cameras
    "crowded": (gaussians(300, [1.5, 1.0, 1.0], [5.5, 14.0, 13.5], (0.3, 0.8), seed=20), (20, 23)),
    "larger": (gaussians(3000, [0, 0, 0], [14, 96, 80], (0.4, 2.0), seed=16), (96, 80)),
}


def cameras(kind, dtype=D64):
    if kind == "axial":
        return ops.axial_cameras([0.0, 3.5, 7.0, 11.2], (1.0, 1.0, 1.0), dtype=dtype)
    g = torch.Generator().manual_seed(3)
    cams = torch.zeros(3, 3, 4, dtype=dtype)
    for b in range(3):
        cams[b, :, :3] = twin.quat_to_rotmat(torch.randn(1, 4, generator=g, dtype=dtype))[0]
        cams[b, :, 3] = torch.tensor([10.0, 12.0, 0.0], dtype=dtype) - cams[b, :, :3] @ torch.full(
            (3,), 10.0, dtype=dtype)
    return cams


def assert_forward(out, ref, amp_max, cutoff, rtol=1e-4, atol_rel=1e-5):
    """|out - ref| <= rtol |ref| + atol_rel max|ref| on every element, except that a voxel/pixel
    sitting on a cutoff boundary may flip in float32: at most 0.1 % of the elements may differ,
    each by no more than twice the value a term has at the cutoff."""
    scale = ref.abs().max().item() if ref.numel() else 0.0
    err = (out - ref).abs()
    tol = rtol * ref.abs() + atol_rel * scale + 1e-30
    bad = err > tol
    n_bad = int(bad.sum())
    assert n_bad <= max(1, int(1e-3 * ref.numel())), \
        f"{n_bad} elements off (max err {err.max():.3g})"
    if n_bad:
        flip = amp_max * math.exp(-cutoff**2 / 2)
        assert err[bad].max() <= 2 * flip, f"max err {err[bad].max():.3g} beyond a cutoff flip"
    assert torch.isfinite(out).all()


def assert_grads(g_out, g_ref, names, rtol=1e-3):
    """Relative error (Frobenius norm) of every gradient tensor within rtol."""
    for name, a, b in zip(names, g_out, g_ref):
        assert torch.isfinite(a).all(), name
        nb = b.norm().item()
        if nb == 0:
            assert a.norm().item() <= 1e-6, name
            continue
        rel = (a - b).norm().item() / nb
        assert rel <= rtol, f"gradient to {name}: relative error {rel:.3g}"
