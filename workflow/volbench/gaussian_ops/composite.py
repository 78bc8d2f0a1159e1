"""Compositing slice rasterizer of seed 004 (eqs. 1-2): torch prelude + compiled splat stage.

Seed 004 renders a slice at depth t along an axis as

    I(u,v,t) = sum_i p_i(u,v,t) alpha_i c_i prod_{j<i} (1 - p_j(u,v,t) alpha_j)      (eq. 1)
    S(u,v,t) = sum_i p_i(u,v,t) alpha_i s_i prod_{j<i} (1 - p_j(u,v,t) alpha_j)      (eq. 2)

with each 3D Gaussian factorised along the slice normal (InnerGS): G(u,v,t) = G(u,v|t) G(t).
The paper leaves the details open; this module fixes them as follows.

Geometry.  Cameras are the (B,3,4) world->camera [R|t] of ``ops.rasterize_slices`` (pixel (r,c)
at a = r*pixel_size[0], b = c*pixel_size[1] on the plane n = 0); ``ops.axial_cameras`` gives the
axial slices z = origin_z + k dz (a, b, n) = (y, x, z - t).  The maths below holds for any rigid
camera, so non-axial cameras also work, but only axial ones are tested.  In camera coordinates
the Gaussian has mean m = R mu + t and covariance C = R S R^T, S = R_q diag(exp(2 log_scales))
R_q^T (ops.py conventions).  Write m = (m_ab, m_n), C = [[C_ab, c], [c^T, C_nn]].

* 1D marginal along the normal, G(t) = N(n = 0; m_n, C_nn).  We use it with peak 1:
      p_i = exp(-1/2 m_n^2 / C_nn)
  (not the density 1/sqrt(2 pi C_nn) exp(...)), so p_i alpha_i is in [0, 1] whenever the
  opacity is, and 1 - p alpha is a valid transmittance factor; p = 1 on a plane through the mean.
* 2D conditional in the plane (Schur complement):
      mean   m2 = m_ab + c (0 - m_n) / C_nn
      cov    S2 = C_ab - c c^T / C_nn
  and alpha_i(pixel) = opacity_i exp(-1/2 d^T inv(S2) d), d = pixel - m2 (peak = opacity).
  p alpha = opacity exp(-1/2 (d,-m_n)^T inv(C) (d,-m_n)): the product is the 3D Gaussian.
* Cutoffs: a (slice, Gaussian) pair is dropped when |m_n| > cutoff sqrt(C_nn) (1D Mahalanobis)
  and a pixel gets exactly 0 from a Gaussian beyond 2D Mahalanobis distance ``cutoff`` in S2.
  Both are exact zeros (no gradient through dropped terms).  No opacity culling: a Gaussian
  of opacity 0 still gets a gradient.
* Order (mode="composite"): per slice, Gaussians are composited nearest first, by |m_n|
  ascending, i.e. |mu_z - t| for axial slices (computed in the working dtype, ``means`` dtype),
  ties broken by Gaussian index (lower index in front).  The order is a function of the slice,
  not of the pixel (as in 3DGS sorting by depth); it is piecewise constant, so no gradient flows
  through it.
* mode="additive": I = sum_i p_i alpha_i c_i (no transmittance), for comparison.
* Clamp: every term's weight is w_i = min(p_i alpha_i(pixel), W_MAX), W_MAX = 0.99 (as 3DGS), on
  every backend, so that the backward may divide by 1 - w; the clamped branch has zero gradient.
  An opaque Gaussian at its centre therefore lets 1 % through (alpha <= 1 - 0.01^k).

Colours c_i are (N,) (grey, output (B,H,W)) or (N,C) (output (B,C,H,W)); features s_i (N,K)
are rendered with the same weights (eq. 2) to (B,K,H,W).  ``alpha`` is the accumulated
opacity per pixel, sum_i w_i T_i = 1 - prod_i (1 - w_i) for compositing (sum_i w_i additive),
w_i = min(p_i alpha_i, W_MAX).  Differentiable in means, log_scales, quats, opacities, colours,
features.

Implementation (the pattern of ops.py): a differentiable torch *prelude* (slice_factors'
quantities in fewer operations, the conic inv(S2), wpeak = p * opacity, the per-slice order with
the 1D cutoff: ``prelude``) feeds a
*splat stage* with one contract (m2, conic, wpeak, order, values -> out, alpha; see
``splat_twin``), behind one autograd Function with three backends:
  * float32 CUDA tensors -> ``volbench_gpu_ext.composite_fwd/_bwd`` (gpu_ext/csrc), when the
    loaded module has them;
  * float32 / float64 CPU tensors -> ``volbench_cpu_ext.composite_fwd/_bwd``
    (gpu_ext/cpu/cpu_composite.cpp: image rows as tiles, exact backward, deterministic);
  * otherwise, when neither loads, or with VOLBENCH_GAUSSIAN_BACKEND=twin: the PyTorch twin
    ``splat_twin`` (the reference; autograd gradients), vectorised over (slice, Gaussian, pixel)
    pairs within the cutoff boxes, the per-pixel front-to-back products by a padded
    (pixels x max overlap) table and torch.cumprod.
``composite_slices(..., backend="twin"|"cpu"|"cuda")`` forces one (tests, benchmarks);
``splat_backend`` tells which one "auto" picks.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch.autograd.function import once_differentiable

from . import backend as _backend
from . import ops as _ops
from .torch_impl import _expand_boxes, covariance, quat_to_rotmat

__all__ = ["SliceRender", "composite_slices", "slice_factors", "prelude", "splat_twin",
           "splat_backend", "W_MAX"]

W_MAX = 0.99          # clamp of every term's weight (all backends)
_BACKENDS = ("auto", "twin", "cpu", "cuda")


class SliceRender(NamedTuple):
    image: torch.Tensor                 # (B,H,W) or (B,C,H,W)
    semantics: Optional[torch.Tensor]   # (B,K,H,W) or None
    alpha: torch.Tensor                 # (B,H,W) accumulated opacity


def slice_factors(means, log_scales, quats, cameras):
    """Per (slice, Gaussian) factorisation along the camera normal.

    Returns (m_n (B,N), C_nn (B,N), m2 (B,N,2), S2 (B,N,2,2)): the signed distance of the mean
    from the plane, the variance along the normal, the conditional in-plane mean and covariance
    (Schur complement).  p = exp(-1/2 m_n^2 / C_nn).
    """
    cams = cameras.to(device=means.device, dtype=means.dtype)
    R, tr = cams[:, :, :3], cams[:, :, 3]
    S = covariance(log_scales, quats)                                   # (N,3,3)
    m = torch.einsum("bij,nj->bni", R, means) + tr[:, None, :]           # (B,N,3)
    C = torch.einsum("bij,njk,blk->bnil", R, S, R)                      # (B,N,3,3)
    m_n = m[..., 2]
    c_nn = C[..., 2, 2]
    c = C[..., :2, 2]                                                   # (B,N,2)
    m2 = m[..., :2] - c * (m_n / c_nn)[..., None]
    S2 = C[..., :2, :2] - c[..., :, None] * c[..., None, :] / c_nn[..., None, None]
    return m_n, c_nn, m2, S2


def _slice_moments(means, log_scales, quats, cameras):
    """slice_factors in fewer torch operations (the prelude's hot path): m_n, C_nn, m2 and the
    entries S2_00, S2_01, S2_11 of the conditional covariance.  C = (R M)(R M)^T with
    M = R_q diag(exp(log_scales)), R M for all Gaussians in one matrix product per slice."""
    cams = cameras.to(device=means.device, dtype=means.dtype)
    R, tr = cams[:, :, :3], cams[:, :, 3]
    N = means.shape[0]
    M = quat_to_rotmat(quats) * torch.exp(log_scales)[:, None, :]      # (N,3,3), S = M M^T
    RM = torch.matmul(R, M.permute(1, 0, 2).reshape(3, 3 * N)).reshape(R.shape[0], 3, N, 3)
    ii, jj = [0, 0, 1, 0, 1, 2], [0, 1, 1, 2, 2, 2]
    c00, c01, c11, c02, c12, c22 = (RM[:, ii] * RM[:, jj]).sum(-1).unbind(1)   # (B,N) each
    m = torch.matmul(means, R.transpose(1, 2)) + tr[:, None, :]         # (B,N,3)
    m_n = m[..., 2]
    k = m_n / c22
    m2 = torch.stack([m[..., 0] - c02 * k, m[..., 1] - c12 * k], -1)
    return (m_n, c22, m2, c00 - c02 * c02 / c22, c01 - c02 * c12 / c22,
            c11 - c12 * c12 / c22)


def prelude(means, log_scales, quats, opacities, cameras, cutoff: float = 3.0):
    """The splat stage's inputs (differentiable torch): m2 (B,N,2), conic (B,N,3) = (A, Bc, Cc)
    of inv(S2), wpeak (B,N) = p * opacity, and order (B,N) int64: per slice the Gaussian ids
    nearest first (|m_n| ascending, ties by id), the pairs kept by the 1D cutoff first (also
    dropped: non-finite or degenerate pairs), then -1 padding."""
    dt = means.dtype
    m_n, c_nn, m2, s00, s01, s11 = _slice_moments(means, log_scales, quats, cameras)
    det = s00 * s11 - s01 * s01
    # dropped pairs get zero gradients: keep their conic finite (no 0/0 in the backward)
    ok_det = (det > 0) & torch.isfinite(det)
    det_s = torch.where(ok_det, det, torch.ones_like(det))
    conic = torch.stack([s11, -s01, s00], -1) / det_s[..., None]
    wpeak = torch.exp(-0.5 * m_n * m_n / c_nn) * opacities.to(dt)
    with torch.no_grad():
        c2 = float(cutoff) ** 2
        keep = ((m_n * m_n <= c2 * c_nn) & torch.isfinite(m_n) & (c_nn > 0) & ok_det
                & torch.isfinite(m2).all(-1) & torch.isfinite(conic).all(-1)
                & torch.isfinite(wpeak))
        # one stable sort: nearest first, ties by lower id; dropped pairs (+inf) last -> -1
        depth = torch.where(keep, m_n.abs(), torch.full_like(m_n, float("inf")))
        order = torch.sort(depth, dim=1, stable=True).indices
        order = torch.where(keep.gather(1, order), order, torch.full_like(order, -1))
    return m2, conic, wpeak, order


def splat_twin(m2, conic, wpeak, order, values, H: int, W: int, ps_r: float, ps_c: float,
               cutoff: float = 3.0, additive: bool = False):
    """The splat stage in PyTorch (reference of the compiled backends; autograd gradients).

    Contract (shared with ``volbench_cpu_ext`` / ``volbench_gpu_ext``.composite_fwd/_bwd):
    m2 (B,N,2) in-plane means (row, column direction, world units; pixel (r, c) at
    (r ps_r, c ps_c)), conic (B,N,3) = (A, Bc, Cc), q(d) = A d0^2 + 2 Bc d0 d1 + Cc d1^2,
    wpeak (B,N), order (B,N) int64 (front first, -1 skipped), values (N,F).  Per pixel, over
    k of order[b], g = order[b, k]: the term is exactly 0 unless q <= cutoff^2 (not finite: 0);
    w = min(wpeak[b, g] exp(-max(q, 0)/2), W_MAX); composite: out += w T values[g],
    T *= 1 - w, alpha = 1 - T; additive: out += w values[g], alpha += w.  No early
    termination.  Returns out (B,F,H,W), alpha (B,H,W).
    """
    B, N = wpeak.shape[0], wpeak.shape[1]
    F = values.shape[1]
    dt, dev = m2.dtype, m2.device
    c2 = float(cutoff) ** 2
    npx = B * H * W
    ps = torch.tensor([float(ps_r), float(ps_c)], dtype=dt, device=dev)
    with torch.no_grad():
        bb, kk = (order >= 0).nonzero(as_tuple=True)                    # slice-major, k ascending
        src = bb * N + order[bb, kk]                                    # row of (B*N)
        cn = conic.reshape(-1, 3)[src]
        mm = m2.reshape(-1, 2)[src]
        detc = cn[:, 0] * cn[:, 2] - cn[:, 1] * cn[:, 1]
        pd = (detc > 0) & (cn[:, 0] > 0)
        var = torch.stack([cn[:, 2], cn[:, 0]], -1) / detc[:, None]     # diag of inv(conic)
        half = torch.where(pd[:, None], float(cutoff) * torch.sqrt(var.clamp_min(0)),
                           torch.full_like(var, float("inf")))         # not PD: whole image
        ctr = mm / ps
        lo = (torch.floor(ctr - half / ps) - 1).clamp(min=0)
        hi = torch.minimum(torch.ceil(ctr + half / ps) + 1,
                           torch.tensor([H - 1, W - 1], dtype=dt, device=dev))
        ok = (torch.isfinite(mm).all(-1) & torch.isfinite(cn).all(-1) & (lo <= hi).all(-1))
        lo = torch.where(ok[:, None], lo, torch.ones_like(lo)).long()
        hi = torch.where(ok[:, None], hi, torch.zeros_like(hi)).long()
        pair, pix = _expand_boxes(lo, hi)
        p_src, b_idx, rank = src[pair], bb[pair], kk[pair]
        g_idx = p_src % max(N, 1)

    d = pix.to(dt) * ps - m2.reshape(-1, 2)[p_src]
    cp = conic.reshape(-1, 3)[p_src]
    q = (cp[:, 0] * d[:, 0] * d[:, 0] + 2 * cp[:, 1] * d[:, 0] * d[:, 1]
         + cp[:, 2] * d[:, 1] * d[:, 1]).clamp_min(0)
    with torch.no_grad():
        sel = (q <= c2).nonzero().squeeze(1)
    b_idx, g_idx, p_src, rank, pix, q = (b_idx[sel], g_idx[sel], p_src[sel], rank[sel],
                                         pix[sel], q[sel])
    lin = (b_idx * H + pix[:, 0]) * W + pix[:, 1]                      # pixel in [0, B*H*W)
    wr = wpeak.reshape(-1)[p_src] * torch.exp(-0.5 * q)
    w = torch.where(wr <= W_MAX, wr, torch.full_like(wr, W_MAX))        # clamp: no gradient

    if additive:
        contrib = w
        alpha = torch.zeros(npx, dtype=dt, device=dev).index_add(0, lin, w)
    else:
        with torch.no_grad():
            key = lin * max(N, 1) + rank
            perm = torch.sort(key).indices
        lin, g_idx, w = lin[perm], g_idx[perm], w[perm]
        with torch.no_grad():
            seg_px, inv, counts = torch.unique_consecutive(lin, return_inverse=True,
                                                           return_counts=True)
            starts = torch.cumsum(counts, 0) - counts
            pos = torch.arange(lin.numel(), device=dev) - starts[inv]
            kmax = int(counts.max()) if counts.numel() else 0
        if lin.numel():
            Wp = torch.zeros(seg_px.numel(), kmax, dtype=dt, device=dev).index_put(
                (inv, pos), w)
            Tinc = torch.cumprod(1 - Wp, dim=1)                         # prod_{j<=k}
            T = torch.cat([torch.ones_like(Tinc[:, :1]), Tinc[:, :-1]], dim=1)
            contrib = (Wp * T)[inv, pos]
            alpha = torch.zeros(npx, dtype=dt, device=dev).index_add(
                0, seg_px, 1 - Tinc[:, -1])
        else:
            contrib = w
            alpha = torch.zeros(npx, dtype=dt, device=dev)
    out = torch.zeros(npx, F, dtype=dt, device=dev).index_add(
        0, lin, contrib[:, None] * values[g_idx])
    return out.reshape(B, H, W, F).permute(0, 3, 1, 2).contiguous(), alpha.reshape(B, H, W)


# ----------------------------------------------------------------------------- compiled stage

def _ext(which: str):
    return _backend.load_cpu() if which == "cpu" else _backend.load()


def _has_composite(mod) -> bool:
    return mod is not None and hasattr(mod, "composite_fwd") and hasattr(mod, "composite_bwd")


class _CompositeSplat(torch.autograd.Function):
    @staticmethod
    def forward(ctx, m2, conic, wpeak, order, values, geom, which):
        ins = tuple(t.contiguous() for t in (m2, conic, wpeak, order, values))
        res = _ext(which).composite_fwd(*ins, *geom)
        out, alpha, saved = res[0], res[1], list(res[2:])
        ctx.save_for_backward(*ins, *saved)
        ctx.geom, ctx.which = geom, which
        return out, alpha

    @staticmethod
    @once_differentiable  # the compiled backward is not differentiable: double backward fails
    def backward(ctx, grad_out, grad_alpha):
        t = ctx.saved_tensors
        ins, saved = t[:5], list(t[5:])
        g_m2, g_conic, g_wp, g_val = _ext(ctx.which).composite_bwd(
            *ins, *ctx.geom, saved, grad_out.contiguous(), grad_alpha.contiguous())
        return g_m2, g_conic, g_wp, None, g_val, None, None


def splat_backend(t: torch.Tensor, *more: torch.Tensor, backend: str = "auto") -> str:
    """Which implementation of the splat stage runs for tensors ``t``, ``more`` (the Gaussian
    parameters): "cuda", "cpu" or "twin".  ``backend`` "auto" follows ops.py's rule
    (VOLBENCH_GAUSSIAN_BACKEND=twin honoured); "cpu" / "cuda" raise when that one cannot run."""
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, not {backend!r}")
    if backend == "twin":
        return "twin"
    ts = (t,) + more
    if backend == "cpu":
        if not all(x.device.type == "cpu" and x.dtype == t.dtype for x in ts) or \
                t.dtype not in (torch.float32, torch.float64):
            raise ValueError("backend='cpu' needs CPU tensors of one dtype, float32 or float64")
        if not _has_composite(_backend.load_cpu()):
            raise RuntimeError("backend='cpu': volbench_cpu_ext with composite_fwd unavailable "
                               f"({_backend.cpu_reason() or 'module without composite_fwd'})")
        return "cpu"
    if backend == "cuda":
        if not all(x.is_cuda and x.dtype == torch.float32 and x.device == t.device for x in ts):
            raise ValueError("backend='cuda' needs float32 CUDA tensors on one device")
        if not _has_composite(_backend.load()):
            raise RuntimeError("backend='cuda': volbench_gpu_ext with composite_fwd unavailable "
                               f"({_backend.reason() or 'module without composite_fwd'})")
        return "cuda"
    if _ops.uses_cuda(t, *more) and _has_composite(_backend.load()):
        return "cuda"
    if _ops.uses_cpu_ext(t, *more) and _has_composite(_backend.load_cpu()):
        return "cpu"
    return "twin"


def _per_gaussian(x: torch.Tensor, N: int) -> torch.Tensor:
    """(N,) or (N, ...) -> (N, F) (also for N = 0)."""
    return x.reshape(N, 1) if x.dim() == 1 else x.reshape(N, math.prod(x.shape[1:]))


def composite_slices(means: torch.Tensor, log_scales: torch.Tensor, quats: torch.Tensor,
                     opacities: torch.Tensor, colors: torch.Tensor, cameras: torch.Tensor,
                     image_shape, pixel_size=(1.0, 1.0), features: Optional[torch.Tensor] = None,
                     mode: str = "composite", cutoff: float = 3.0,
                     backend: str = "auto") -> SliceRender:
    """Render B slices with seed 004's eq. 1 (and eq. 2 for ``features``); see module doc.
    Every term's weight is clamped to W_MAX = 0.99 (all backends).  ``backend``: "auto"
    (default; see ``splat_backend``), or force "twin", "cpu" or "cuda"."""
    if mode not in ("composite", "additive"):
        raise ValueError(f"mode must be 'composite' or 'additive', not {mode!r}")
    which = splat_backend(means, log_scales, quats, opacities, backend=backend)
    H, W = (int(s) for s in image_shape)
    dt = means.dtype
    N = means.shape[0]
    grey = colors.dim() == 1
    col = _per_gaussian(colors, N).to(dt)
    C = col.shape[1]
    vals = col if features is None else torch.cat([col, _per_gaussian(features, N).to(dt)], 1)

    m2, conic, wpeak, order = prelude(means, log_scales, quats, opacities, cameras, cutoff)
    geom = (H, W, float(pixel_size[0]), float(pixel_size[1]), float(cutoff), mode == "additive")
    if which == "twin":
        out, alpha = splat_twin(m2, conic, wpeak, order, vals, *geom)
    else:
        out, alpha = _CompositeSplat.apply(m2, conic, wpeak, order, vals, geom, which)
    img = out[:, 0] if grey else out[:, :C]
    sem = None if features is None else out[:, C:]
    return SliceRender(img, sem, alpha)
