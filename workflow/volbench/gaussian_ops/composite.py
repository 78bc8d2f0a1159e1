"""Compositing slice rasterizer of seed 004 (eqs. 1-2), PyTorch only (a twin; no kernels yet).

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

Colours c_i are (N,) (grey, output (B,H,W)) or (N,C) (output (B,C,H,W)); features s_i (N,K)
are rendered with the same weights (eq. 2) to (B,K,H,W).  ``alpha`` is the accumulated
opacity per pixel, sum_i w_i T_i = 1 - prod_i (1 - w_i) for compositing (sum_i w_i additive),
w_i = p_i alpha_i.  Differentiable in means, log_scales, quats, opacities, colours, features.

Implementation: vectorised over (slice, Gaussian, pixel) pairs within the cutoff boxes (no
Python loop over Gaussians); the per-pixel front-to-back products use a padded
(pixels x max overlap) table and torch.cumprod (whose backward is exact when a factor is 0,
e.g. an opaque Gaussian at its centre).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .torch_impl import _expand_boxes, covariance

__all__ = ["SliceRender", "composite_slices", "slice_factors"]


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


def composite_slices(means: torch.Tensor, log_scales: torch.Tensor, quats: torch.Tensor,
                     opacities: torch.Tensor, colors: torch.Tensor, cameras: torch.Tensor,
                     image_shape, pixel_size=(1.0, 1.0), features: Optional[torch.Tensor] = None,
                     mode: str = "composite", cutoff: float = 3.0) -> SliceRender:
    """Render B slices with seed 004's eq. 1 (and eq. 2 for ``features``); see module doc."""
    if mode not in ("composite", "additive"):
        raise ValueError(f"mode must be 'composite' or 'additive', not {mode!r}")
    H, W = (int(s) for s in image_shape)
    dev, dt = means.device, means.dtype
    N = means.shape[0]
    B = cameras.shape[0]
    grey = colors.dim() == 1
    col = colors.reshape(N, -1).to(dt)
    C = col.shape[1]
    feat = None if features is None else features.reshape(N, -1).to(dt)
    P = H * W
    npx = B * P

    m_n, c_nn, m2, S2 = slice_factors(means, log_scales, quats, cameras)
    det = S2[..., 0, 0] * S2[..., 1, 1] - S2[..., 0, 1] * S2[..., 1, 0]
    conic = torch.stack([S2[..., 1, 1] / det, -S2[..., 0, 1] / det, S2[..., 0, 0] / det], -1)
    ps = torch.tensor([float(pixel_size[0]), float(pixel_size[1])], dtype=dt, device=dev)
    c2 = float(cutoff) ** 2

    with torch.no_grad():
        # 1D cutoff, then each kept pair's conservative pixel box of its 2D cutoff ellipse
        keep = (m_n * m_n <= c2 * c_nn) & torch.isfinite(m_n) & (c_nn > 0) & (det > 0)
        half = float(cutoff) * torch.sqrt(torch.stack([S2[..., 0, 0], S2[..., 1, 1]], -1)
                                          .clamp_min(0))
        ctr = m2 / ps
        hp = half / ps
        lo = torch.ceil(ctr - hp).clamp(min=0)
        hi = torch.minimum(torch.floor(ctr + hp),
                           torch.tensor([H - 1, W - 1], dtype=dt, device=dev))
        ok = keep & torch.isfinite(lo).all(-1) & torch.isfinite(hi).all(-1)
        lo = torch.where(ok[..., None], lo, torch.ones_like(lo)).long().reshape(B * N, 2)
        hi = torch.where(ok[..., None], hi, torch.zeros_like(hi)).long().reshape(B * N, 2)
        src, pix = _expand_boxes(lo, hi)                                # src = b*N + i
        # per-slice rank: |m_n| ascending, ties by index (stable sort of index order)
        order = torch.sort(m_n.abs(), dim=1, stable=True).indices       # (B,N)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(N, device=dev).expand(B, N).contiguous())

    b_idx = src // N
    g_idx = src % N
    d = pix.to(dt) * ps - m2.reshape(B * N, 2)[src]
    cn = conic.reshape(B * N, 3)[src]
    q = (cn[:, 0] * d[:, 0] * d[:, 0] + 2 * cn[:, 1] * d[:, 0] * d[:, 1]
         + cn[:, 2] * d[:, 1] * d[:, 1]).clamp_min(0)
    with torch.no_grad():
        inside = q <= c2
    sel = inside.nonzero().squeeze(1)
    src, b_idx, g_idx, pix, q = src[sel], b_idx[sel], g_idx[sel], pix[sel], q[sel]
    lin = (b_idx * H + pix[:, 0]) * W + pix[:, 1]                      # pixel in [0, B*H*W)

    mn = m_n.reshape(-1)[src]
    p = torch.exp(-0.5 * mn * mn / c_nn.reshape(-1)[src])
    w = p * opacities.to(dt)[g_idx] * torch.exp(-0.5 * q)               # p_i alpha_i

    if mode == "additive":
        contrib = w
        alpha = torch.zeros(npx, dtype=dt, device=dev).index_add(0, lin, w)
    else:
        with torch.no_grad():
            key = lin * N + rank.reshape(-1)[src]
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

    def accumulate(vals):  # (N,K) per-Gaussian values -> (B,K,H,W)
        out = torch.zeros(npx, vals.shape[1], dtype=dt, device=dev)
        out = out.index_add(0, lin, contrib[:, None] * vals[g_idx])
        return out.reshape(B, H, W, -1).permute(0, 3, 1, 2)

    img = accumulate(col)
    if grey:
        img = img[:, 0]
    sem = None if feat is None else accumulate(feat)
    return SliceRender(img, sem, alpha.reshape(B, H, W))
