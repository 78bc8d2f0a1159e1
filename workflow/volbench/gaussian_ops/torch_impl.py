"""Pure-PyTorch twins of the Gaussian operators (CPU path, oracle for the CUDA kernels).

Every operator is split in two stages, shared by the twin and the CUDA path:

1. a per-Gaussian (per camera x Gaussian for slices) *prelude* in plain torch
   (:func:`prepare_3d`, :func:`prepare_slices`): rotation, precision factor, camera transform,
   focus model, culling radii.  It is O(N) work; autograd differentiates it on every device, so
   the gradients to means, log-scales, quaternions and amplitudes always come out of the same code.
2. a *splat* stage (:func:`splat_voxels`, :func:`splat_pixels`) that evaluates the prepared
   Gaussians on voxel / pixel tiles.  This is the O(voxels x Gaussians-per-tile) work that the
   CUDA kernels replace; here it is done on (tile, Gaussian) pairs in bounded chunks with the same
   tiling and the same conservative bounding-box culling as the kernels.

Conventions (docs in ops.py): world coordinates (z, y, x); covariance S = R diag(exp(2 s)) R^T;
a term whose Mahalanobis distance exceeds ``cutoff`` is exactly zero.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

VOXEL_TILE = 8  # voxelizer tiles are 8x8x8 voxels
PIXEL_TILE = 16  # rasterizer tiles are 16x16 pixels
# evaluations (pair x voxel) held in memory at once by the twin's splat stage
_CHUNK_EVALS = 1 << 21


# ----------------------------------------------------------------------------- geometry

def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """(N,4) quaternions (w, x, y, z), any norm -> (N,3,3) rotation (3DGS build_rotation).

    A quaternion with squared norm below 1e-20 is read as the identity (no NaN, zero gradient).
    Only correctly rounded basic operations, in a fixed order (fixed.py relies on it).
    """
    q0, q1, q2, q3 = quats.unbind(-1)
    sq = (((q0 * q0 + q1 * q1) + q2 * q2) + q3 * q3).unsqueeze(-1)
    ident = torch.zeros_like(quats)
    ident[..., 0] = 1.0
    ok = sq > 1e-20
    q = torch.where(ok, quats, ident)
    q = q / torch.sqrt(torch.where(ok, sq, torch.ones_like(sq)))
    w, x, y, z = q.unbind(-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )
    return R.reshape(quats.shape[:-1] + (3, 3))


def covariance(log_scales: torch.Tensor, quats: torch.Tensor) -> torch.Tensor:
    """(N,3,3) covariance R diag(exp(2 s)) R^T (for tests and callers; kernels never form it)."""
    R = quat_to_rotmat(quats)
    return R @ torch.diag_embed(torch.exp(2 * log_scales)) @ R.transpose(-1, -2)


def prepare_3d(means, log_scales, quats, cutoff: float):
    """Per-Gaussian quantities of the voxelizer.

    Returns ``A`` (N,3,3) with A = diag(exp(-s)) R^T, so the squared Mahalanobis distance is
    |A (x - mu)|^2 (no matrix inverse, stable for needle-thin Gaussians), and ``half_ext`` (N,3),
    the half-extent of the cutoff ellipsoid's axis-aligned bounding box along each world axis:
    cutoff * sqrt(S_jj) (accounts for the rotation).  ``half_ext`` carries no gradient.
    """
    R = quat_to_rotmat(quats)
    A = torch.exp(-log_scales).unsqueeze(-1) * R.transpose(-1, -2)
    with torch.no_grad():
        var = ((R * R) * torch.exp(2 * log_scales).unsqueeze(-2)).sum(-1)  # S_jj
        half_ext = cutoff * torch.sqrt(var)
    return A, half_ext


def axial_cameras(indices, spacing, origin=(0.0, 0.0, 0.0), dtype=torch.float32, device=None):
    """(B,3,4) cameras of the axial slices z = origin_z + k*dz; pixel (r,c) -> voxel (k,r,c).

    Camera axes (a, b, n) = (y - oy, x - ox, z - oz - k dz): R is the cyclic permutation
    (z,y,x) -> (y,x,z) (det +1).
    """
    idx = torch.as_tensor(list(indices) if not torch.is_tensor(indices) else indices,
                          dtype=dtype, device=device).reshape(-1)
    dz = float(spacing[0])
    oz, oy, ox = (float(o) for o in origin)
    B = idx.numel()
    cams = torch.zeros(B, 3, 4, dtype=dtype, device=device)
    cams[:, 0, 1] = 1.0
    cams[:, 1, 2] = 1.0
    cams[:, 2, 0] = 1.0
    cams[:, 0, 3] = -oy
    cams[:, 1, 3] = -ox
    cams[:, 2, 3] = -(oz + idx * dz)
    return cams


def prepare_slices(means, log_scales, quats, opacities, cameras, mode: str, sigma_z: float,
                   cutoff: float, opacity_threshold: float, pixel_size):
    """Per (camera, Gaussian) 2D footprints for :func:`splat_pixels`.

    Returns mean2d (B,N,2) in world units of the image plane, conic (B,N,3) = the entries
    (c00, c01, c11) of inv(S_2d), weight (B,N) = the value at the 2D centre, and radii (B,N,2),
    the cutoff half-extents of the footprint in *pixels* (-1 where culled; no gradient).

    mode "focus" (seed 000 eqs. 6-9), written in closed forms that equal the paper's expressions
    exactly (see README of gpu_ext): with  k = 1/sigma_z^2 / (1 + S_c22 / sigma_z^2)
        S_e      = S_c - k S_c e3 e3^T S_c                     (Sherman-Morrison of eq. 6)
        mu_e     = mu_c - k S_c e3 mu_c,z                      (= S_e inv(S_c) mu_c)
        q        = mu_c^T inv(S_c) mu_c - mu_e^T inv(S_e) mu_e = k mu_c,z^2       (eq. 7)
        det S_2d = det(S_c) (1/sigma_z^2 + inv(S_c)_22) / (1/sigma_z^2 + ...) -> see code
    mode "3dgs" (seed 000 sec. 10, slice-adapted 3DGS): mask out Gaussians with
    |mu_c,z| > cutoff * sqrt(S_c22 + sigma_z^2), project to the plane (S_2d = top-left of S_c,
    mu_2d = mu_c[:2]), attenuate by exp(-1/2 mu_c,z^2 / (S_c22 + sigma_z^2)), no determinant
    normalisation (peak = opacity * attenuation).
    """
    if mode not in ("focus", "3dgs"):
        raise ValueError(f"rasterize_slices: mode must be 'focus' or '3dgs', got {mode!r}")
    sigma_z = float(sigma_z)
    if not sigma_z > 0:
        raise ValueError(f"rasterize_slices: sigma_z must be > 0 (inf allowed), got {sigma_z}")
    inv_s2 = 0.0 if math.isinf(sigma_z) else 1.0 / (sigma_z * sigma_z)

    R = quat_to_rotmat(quats)  # (N,3,3)
    Rc = cameras[:, :, :3]  # (B,3,3)
    t = cameras[:, :, 3]  # (B,3)
    mu_c = torch.einsum("bij,nj->bni", Rc, means) + t[:, None, :]  # (B,N,3)
    M = torch.einsum("bij,njk->bnik", Rc, R)  # (B,N,3,3) camera-from-local rotation
    s2 = torch.exp(2 * log_scales)  # (N,3)
    Ms = M * s2[None, :, None, :]
    S_c = Ms @ M.transpose(-1, -2)  # (B,N,3,3)
    P22 = (M[..., 2, :] ** 2 * torch.exp(-2 * log_scales)[None]).sum(-1)  # inv(S_c)_22
    logdet_c = 2 * log_scales.sum(-1)[None, :]  # log det S_c
    S22 = S_c[..., 2, 2]
    muz = mu_c[..., 2]

    if mode == "focus":
        den = 1.0 + S22 * inv_s2
        k = inv_s2 / den
        col = S_c[..., :2, 2]  # S_c[:2, 2]
        S2 = S_c[..., :2, :2] - k[..., None, None] * col[..., :, None] * col[..., None, :]
        mu2 = mu_c[..., :2] - (k * muz)[..., None] * col
        q = k * muz * muz
        # det S_2d = det(S_e) * inv(S_e)_22, det S_e = det S_c / den, inv(S_e)_22 = P22 + 1/s^2
        logdet2 = logdet_c + torch.log(P22 + inv_s2) - torch.log(den)
        eff = opacities[None, :] * torch.exp(-0.5 * q)  # alpha * opacity_r (culling)
        weight = opacities[None, :] * torch.exp(-0.5 * (q + logdet2))
        keep = eff >= opacity_threshold
    else:
        S2 = S_c[..., :2, :2]
        mu2 = mu_c[..., :2]
        logdet2 = logdet_c + torch.log(P22)  # det of the top-left 2x2 of S_c
        var_n = S22 + sigma_z * sigma_z if not math.isinf(sigma_z) else None
        if var_n is None:
            att = torch.ones_like(S22)
            inside = torch.ones_like(S22, dtype=torch.bool)
        else:
            att = torch.exp(-0.5 * muz * muz / var_n)
            inside = (muz * muz <= (cutoff * cutoff) * var_n).detach()
        weight = opacities[None, :] * att
        eff = weight
        keep = inside & (eff >= opacity_threshold)
        weight = torch.where(inside, weight, torch.zeros_like(weight))

    inv_det = torch.exp(-logdet2)
    conic = torch.stack([S2[..., 1, 1] * inv_det, -S2[..., 0, 1] * inv_det,
                         S2[..., 0, 0] * inv_det], dim=-1)
    with torch.no_grad():
        ra = cutoff * torch.sqrt(S2[..., 0, 0].clamp_min(0)) / float(pixel_size[0])
        rb = cutoff * torch.sqrt(S2[..., 1, 1].clamp_min(0)) / float(pixel_size[1])
        radii = torch.stack([ra, rb], dim=-1)
        ok = keep & torch.isfinite(weight) & torch.isfinite(conic).all(-1) \
            & torch.isfinite(mu2).all(-1) & torch.isfinite(radii).all(-1)
        radii = torch.where(ok[..., None], radii, torch.full_like(radii, -1.0))
    # culled terms must not poison the twin's autograd with inf * 0
    zero = torch.zeros_like(weight)
    weight = torch.where(ok, weight, zero)
    conic = torch.where(ok[..., None], conic, torch.zeros_like(conic))
    mu2 = torch.where(ok[..., None], mu2, torch.zeros_like(mu2))
    return mu2, conic, weight, radii


# ----------------------------------------------------------------------------- pair lists

def _expand_boxes(lo: torch.Tensor, hi: torch.Tensor):
    """Enumerate integer boxes [lo, hi] (inclusive, (P,k)) -> (src (Q,), coords (Q,k)).

    Rows with any hi < lo contribute nothing.  Ordered by source, then row-major coords.
    """
    k = lo.shape[1]
    ext = (hi - lo + 1).clamp_min(0)
    count = ext.prod(-1)
    src = torch.repeat_interleave(torch.arange(lo.shape[0], device=lo.device), count)
    if src.numel() == 0:
        return src, torch.zeros(0, k, dtype=lo.dtype, device=lo.device)
    start = torch.cumsum(count, 0) - count
    local = torch.arange(src.numel(), device=lo.device) - start[src]
    coords = torch.empty(src.numel(), k, dtype=lo.dtype, device=lo.device)
    e = ext[src]
    for j in range(k - 1, -1, -1):
        coords[:, j] = lo[src, j] + local % e[:, j]
        local = local // e[:, j]
    return src, coords


def _index_range(center, half, step, n):
    """Conservative inclusive index range of grid points i*step (0 <= i < n) within
    center +- half; empty rows have hi < lo.  Same rule as the CUDA kernels."""
    n = torch.as_tensor(n, device=center.device).to(center.dtype)
    lo = torch.floor((center - half) / step).clamp(min=0)
    hi = torch.minimum(torch.ceil((center + half) / step), n - 1)
    bad = ~(torch.isfinite(center) & torch.isfinite(half) & (half >= 0))
    lo = torch.where(bad, torch.ones_like(lo), lo)
    hi = torch.where(bad, torch.zeros_like(hi), hi)
    return lo.long(), hi.long()


# ----------------------------------------------------------------------------- voxelizer

def _voxel_tile_offsets(device):
    r = torch.arange(VOXEL_TILE, device=device)
    zz, yy, xx = torch.meshgrid(r, r, r, indexing="ij")
    return torch.stack([zz, yy, xx], -1).reshape(-1, 3)  # (512,3) long


def splat_voxels(means, A, amps, half_ext, roi_origin, spacing, roi_shape, cutoff: float,
                 chunk_evals: int = _CHUNK_EVALS):
    """Evaluate sum_i amps_i exp(-1/2 |A_i (x - mu_i)|^2) (zero beyond ``cutoff``) on the grid
    x = roi_origin + idx * spacing, idx in [0, roi_shape).  Gaussians are assigned to the 8^3
    tiles their bounding box touches; evaluation runs over (tile, Gaussian) pairs in chunks.
    Positions are relative to ``roi_origin`` (mean - origin once per Gaussian, in float64, like
    the CUDA kernels): a grid far from 0 loses no float32 precision."""
    dev, dt = means.device, means.dtype
    rz, ry, rx = (int(s) for s in roi_shape)
    nvox = rz * ry * rx
    need_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (means, A, amps))
    out = torch.zeros(nvox + 1, dtype=dt, device=dev)
    if nvox == 0 or means.shape[0] == 0:
        return out[:nvox].reshape(rz, ry, rx)
    o64 = torch.as_tensor(roi_origin, dtype=torch.float64, device=dev)
    rel = (means.to(torch.float64) - o64).to(dt)  # mean - origin (differentiable)
    sp = torch.as_tensor(spacing, dtype=dt, device=dev)
    shp = torch.tensor([rz, ry, rx], device=dev)
    c2 = float(cutoff) ** 2
    offs = _voxel_tile_offsets(dev)
    offs_w = offs.to(dt) * sp  # (512,3)
    with torch.no_grad():
        lo, hi = _index_range(rel.detach(), half_ext, sp, shp)
        tlo, thi = lo // VOXEL_TILE, hi // VOXEL_TILE
        thi = torch.where(hi < lo, tlo - 1, thi)
    # slabs of tile rows along z keep the pair list bounded for large grids
    ntz = -(-rz // VOXEL_TILE)
    tiles_per_zrow = (-(-ry // VOXEL_TILE)) * (-(-rx // VOXEL_TILE))
    rows_per_slab = max(1, (1 << 14) // max(1, tiles_per_zrow))
    for z0 in range(0, ntz, rows_per_slab):
        z1 = min(ntz, z0 + rows_per_slab) - 1
        with torch.no_grad():
            slo, shi = tlo.clone(), thi.clone()
            slo[:, 0] = slo[:, 0].clamp(min=z0)
            shi[:, 0] = shi[:, 0].clamp(max=z1)
            src, tiles = _expand_boxes(slo, shi)
        per = max(1, chunk_evals // offs.shape[0])
        for p0 in range(0, src.numel(), per):
            g = src[p0:p0 + per]
            tl = tiles[p0:p0 + per]
            base = tl * VOXEL_TILE  # (P,3) voxel index of the tile corner
            vidx = base[:, None, :] + offs[None]  # (P,512,3)
            valid = (vidx < shp).all(-1)
            lin = (vidx[..., 0] * ry + vidx[..., 1]) * rx + vidx[..., 2]
            lin = torch.where(valid, lin, torch.full_like(lin, nvox))
            Ag = A[g]
            b = torch.einsum("pkj,pj->pk", Ag, base.to(dt) * sp - rel[g])  # (P,3)
            y = b[:, None, :] + torch.einsum("pkj,vj->pvk", Ag, offs_w)  # (P,512,3)
            m = (y * y).sum(-1)
            inside = (m <= c2) & valid
            val = torch.where(inside, amps[g][:, None] * torch.exp(-0.5 * m),
                              torch.zeros_like(m))
            if need_grad:
                out = out.index_add(0, lin.reshape(-1), val.reshape(-1))
            else:
                out.index_add_(0, lin.reshape(-1), val.reshape(-1))
    return out[:nvox].reshape(rz, ry, rx)


def roi_box(shape, roi) -> tuple[int, int, int, int, int, int]:
    """The half-open voxel box ``roi`` (z0, z1, y0, y1, x0, x1) checked against ``shape``
    (None: the whole grid)."""
    D, H, W = (int(s) for s in shape)
    if roi is None:
        roi = (0, D, 0, H, 0, W)
    z0, z1, y0, y1, x0, x1 = (int(v) for v in roi)
    if not (0 <= z0 <= z1 <= D and 0 <= y0 <= y1 <= H and 0 <= x0 <= x1 <= W):
        raise ValueError(f"voxelize: roi {tuple(roi)} is not a half-open box inside {tuple(shape)}")
    return z0, z1, y0, y1, x0, x1


def _roi_geometry(shape, spacing, origin, roi):
    z0, z1, y0, y1, x0, x1 = roi_box(shape, roi)
    sp = tuple(float(s) for s in spacing)
    org = tuple(float(origin[i]) + (z0, y0, x0)[i] * sp[i] for i in range(3))
    return org, sp, (z1 - z0, y1 - y0, x1 - x0)


def voxelize(means, log_scales, quats, amps, shape, spacing=(1.0, 1.0, 1.0),
             origin=(0.0, 0.0, 0.0), cutoff=3.0, roi=None):
    """Twin of ops.voxelize (same signature); output dtype follows ``means``."""
    roi_origin, sp, roi_shape = _roi_geometry(shape, spacing, origin, roi)
    A, half_ext = prepare_3d(means, log_scales, quats, cutoff)
    return splat_voxels(means, A, amps, half_ext, roi_origin, sp, roi_shape, cutoff)


# ----------------------------------------------------------------------------- rasterizer

def _pixel_tile_offsets(device):
    r = torch.arange(PIXEL_TILE, device=device)
    rr, cc = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([rr, cc], -1).reshape(-1, 2)  # (256,2)


def splat_pixels(mean2d, conic, weight, radii, image_shape, pixel_size, cutoff: float,
                 chunk_evals: int = _CHUNK_EVALS):
    """Evaluate, for every camera b, sum_n weight exp(-1/2 d^T conic d) (zero where the 2D
    Mahalanobis distance exceeds ``cutoff``), d = pixel - mean2d, pixel (r,c) at
    (r*ps0, c*ps1); (camera, Gaussian) pairs with radius < 0 are culled.  Inputs (B,N,...)."""
    B, N = weight.shape
    H, W = (int(s) for s in image_shape)
    dev, dt = weight.device, weight.dtype
    npx = B * H * W
    out = torch.zeros(npx + 1, dtype=dt, device=dev)
    if npx == 0 or N == 0:
        return out[:npx].reshape(B, H, W)
    need_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (mean2d, conic, weight))
    ps = torch.tensor([float(pixel_size[0]), float(pixel_size[1])], dtype=dt, device=dev)
    c2 = float(cutoff) ** 2
    m2 = mean2d.reshape(B * N, 2)
    cn = conic.reshape(B * N, 3)
    wt = weight.reshape(B * N)
    with torch.no_grad():
        rad = radii.reshape(B * N, 2)
        center = m2.detach() / ps
        lo = torch.floor(center - rad).clamp(min=0)
        hi = torch.ceil(center + rad)
        hi = torch.minimum(hi, torch.tensor([H - 1, W - 1], dtype=dt, device=dev))
        bad = ~((rad >= 0).all(-1) & torch.isfinite(center).all(-1))
        lo = torch.where(bad[:, None], torch.ones_like(lo), lo).long()
        hi = torch.where(bad[:, None], torch.zeros_like(hi), hi).long()
        tlo, thi = lo // PIXEL_TILE, hi // PIXEL_TILE
        thi = torch.where(hi < lo, tlo - 1, thi)
        src, tiles = _expand_boxes(tlo, thi)
        cam = src // N
    offs = _pixel_tile_offsets(dev)
    offs_w = offs.to(dt) * ps
    per = max(1, chunk_evals // offs.shape[0])
    for p0 in range(0, src.numel(), per):
        g = src[p0:p0 + per]
        base = tiles[p0:p0 + per] * PIXEL_TILE
        pidx = base[:, None, :] + offs[None]  # (P,256,2)
        valid = (pidx[..., 0] < H) & (pidx[..., 1] < W)
        lin = (cam[p0:p0 + per, None] * H + pidx[..., 0]) * W + pidx[..., 1]
        lin = torch.where(valid, lin, torch.full_like(lin, npx))
        d = (base.to(dt) * ps - m2[g])[:, None, :] + offs_w[None]  # (P,256,2)
        c = cn[g]
        m = (c[:, None, 0] * d[..., 0] * d[..., 0] + 2 * c[:, None, 1] * d[..., 0] * d[..., 1]
             + c[:, None, 2] * d[..., 1] * d[..., 1])
        m = m.clamp_min(0)
        inside = (m <= c2) & valid
        val = torch.where(inside, wt[g][:, None] * torch.exp(-0.5 * m), torch.zeros_like(m))
        if need_grad:
            out = out.index_add(0, lin.reshape(-1), val.reshape(-1))
        else:
            out.index_add_(0, lin.reshape(-1), val.reshape(-1))
    return out[:npx].reshape(B, H, W)


def rasterize_slices(means, log_scales, quats, opacities, cameras, image_shape, pixel_size,
                     mode="focus", sigma_z=1.0, cutoff=3.0, opacity_threshold=1e-4):
    """Twin of ops.rasterize_slices (same signature); output dtype follows ``means``."""
    cams = cameras.to(means.dtype)
    mu2, conic, weight, radii = prepare_slices(means, log_scales, quats, opacities, cams, mode,
                                               sigma_z, cutoff, opacity_threshold, pixel_size)
    return splat_pixels(mu2, conic, weight, radii, image_shape, pixel_size, cutoff)
