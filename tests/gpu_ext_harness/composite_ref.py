"""Cases and a float64 reference of the compositing splat stage (``composite_fwd`` /
``composite_bwd``), shared by the CPU-emulated kernel tests (test_gpu_ext_emulated.py) and the
CUDA parity tests (test_gpu_ext_parity.py).

The reference is the contract itself, written densely (every pixel against every kept pair of
its slice, no tiles, no lists): q = A d0^2 + 2 B d0 d1 + C d1^2 with d = (r ps_r, c ps_c) - m2,
a term only where q is finite and <= cutoff^2, w = min(wpeak exp(-max(q, 0)/2), 0.99) (as the
twin, gaussian_ops/composite.py: no gradient to q where q < 0), front to back
in the order of ``order`` (``-1`` skipped), out = sum w T v, alpha = 1 - prod(1 - w)
(composite) or out = sum w v, alpha = sum w (additive); gradients by torch autograd in float64.
The one float32 decision it copies from the kernels is the cutoff test (q in float32, the
kernels' operation order): a pixel within rounding of the cutoff ellipse would otherwise flip
between the two, and in compositing a flipped term changes the transmittance of every term
behind it.  Pixel positions are the kernels' float32 products r * ps.
"""

from __future__ import annotations

import math

import numpy as np
import torch

F32, D64 = torch.float32, torch.float64
W_MAX = 0.99
CUTOFF = 3.0
PIXEL_SIZE = (1.0, 0.9)


def _conics(scales, angles):
    """(A, B, C) = inverse of R diag(s^2) R^T, R the rotation by angle."""
    c, s = torch.cos(angles), torch.sin(angles)
    s0, s1 = scales[..., 0] ** 2, scales[..., 1] ** 2
    S00 = c * c * s0 + s * s * s1
    S11 = s * s * s0 + c * c * s1
    S01 = c * s * (s0 - s1)
    det = S00 * S11 - S01 * S01
    return torch.stack([S11 / det, -S01 / det, S00 / det], -1)


def _order(depth, keep):
    """Per slice: ids by |depth| ascending, ties by id (stable), dropped pairs as -1 at the end."""
    B, N = depth.shape
    key = torch.where(keep, depth.abs(), torch.full_like(depth, math.inf))
    order = torch.sort(key, dim=1, stable=True).indices
    n_keep = keep.sum(1)
    pos = torch.arange(N).expand(B, N)
    return torch.where(pos < n_keep[:, None], order, torch.full_like(order, -1))


def make_case(name: str) -> dict:
    """Inputs (float32 / int64 CPU tensors) and geometry of one named case."""
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    rand = lambda *s: torch.rand(*s, generator=g, dtype=D64)  # noqa: E731
    H, W, B, N, F = 37, 45, 3, 70, 3
    spread = 1.0
    if name == "grey":
        F = 1
    elif name == "features":
        B, N, F = 2, 40, 11          # two channel chunks of 8
    elif name == "no_values":
        B, N, F = 2, 30, 0           # alpha only
    elif name == "crowded":
        H, W, B, N, F = 20, 19, 1, 300, 3   # > 256 entries per tile: two batches
    elif name == "straddling":
        B, N, F = 2, 48, 4
    elif name == "saturated":
        H, W, B, N, F = 18, 21, 1, 40, 2
    elif name == "ties":
        B, N, F = 2, 24, 3
    elif name == "big_f":
        H, W, B, N, F = 17, 16, 1, 20, 19   # three chunks, the last one partial
    ps = PIXEL_SIZE
    ext = torch.tensor([H * ps[0], W * ps[1]], dtype=D64)
    m2 = -3.0 + (ext + 6.0) * rand(B, N, 2)            # over the image edges too
    scales = (0.6 + 3.0 * rand(B, N, 2)) * spread
    angles = math.pi * rand(B, N)
    wpeak = rand(B, N)
    values = rand(N, F) * 2 - 0.5
    depth = torch.round(rand(B, N) * 6) / 4 - 0.75      # many exact ties of |depth|
    keep = rand(B, N) < 0.85                             # the rest dropped by the 1D cutoff
    if name == "straddling":
        # centres on tile borders (16 k - 1/2 pixels) and on / beyond the image edges
        rows = torch.tensor([15.5, 16.0, 31.5, -0.5, 36.5, 38.0, 0.0, 16.5], dtype=D64)
        cols = torch.tensor([15.5, 31.5, 16.0, -1.0, 44.5, 47.0, 32.5, 0.0], dtype=D64)
        i = torch.arange(B * N) % 8
        j = (torch.arange(B * N) // 8) % 8
        m2 = torch.stack([rows[i] * ps[0], cols[j] * ps[1]], -1).reshape(B, N, 2)
        m2 = m2 + 0.02 * rand(B, N, 2)
        scales = 0.5 + 1.5 * rand(B, N, 2)
    if name == "crowded":
        m2 = torch.tensor([8.0, 8.0], dtype=D64) + 6.0 * rand(B, N, 2)
        wpeak = 0.05 + 0.2 * rand(B, N)
        keep = torch.ones(B, N, dtype=torch.bool)
    if name == "saturated":
        # 30 wide opaque Gaussians on one spot: w clamped to 0.99 near it, T below 1e-30
        # after 15 of them there, and after 30 over a disc around it
        m2[:, :30] = torch.tensor([8.3, 9.1], dtype=D64) + 0.3 * rand(B, 30, 2)
        scales[:, :30] = 5.0 + 2.0 * rand(B, 30, 2)
        wpeak[:, :30] = 1.0
        wpeak[:, 30:35] = 0.995     # clamped only where exp(-q/2) > 0.99 / 0.995
        keep[:] = True
    if name == "ties":
        # pairs of identical footprints at equal depth with different values: the order decides
        m2[:, 1::2] = m2[:, 0::2]
        scales[:, 1::2] = scales[:, 0::2]
        angles[:, 1::2] = angles[:, 0::2]
        depth[:, 1::2] = depth[:, 0::2]
        wpeak = 0.3 + 0.6 * rand(B, N)
    conic = _conics(scales, angles)
    if name == "mixed":
        # slice 2 empty; in slice 1 an indefinite conic (q <= c2 on an unbounded set: every
        # pixel tested), a non-finite centre and a non-finite conic, all kept
        keep[2] = False
        keep[1, :3] = True
        conic[1, 0] = torch.tensor([0.3, 0.0, -0.05], dtype=D64)
        wpeak[1, 0] = 0.3
        depth[1, 0] = 10.0          # last in slice 1's order
        m2[1, 1, 0] = math.nan
        conic[1, 2, 1] = math.inf
    order = _order(depth, keep)
    return {"m2": m2.to(F32), "conic": conic.to(F32), "wpeak": wpeak.to(F32), "order": order,
            "values": values.to(F32), "H": H, "W": W, "ps": ps, "cutoff": CUTOFF}


CASES = ["mixed", "grey", "features", "no_values", "crowded", "straddling", "saturated", "ties",
         "big_f"]


def upstream(case: dict, seed: int):
    """dL/dout (B,F,H,W) and dL/dalpha (B,H,W): uniform in [-0.5, 1) with ~10 % exact zeros."""
    g = torch.Generator().manual_seed(seed)
    B, F = case["m2"].shape[0], case["values"].shape[1]
    H, W = case["H"], case["W"]

    def one(shape):
        x = torch.rand(shape, generator=g) * 1.5 - 0.5
        return torch.where(torch.rand(shape, generator=g) < 0.1, torch.zeros_like(x), x)

    return one((B, F, H, W)), one((B, H, W))


def _hit_mask_f32(pa, pb, m2, conic, c2):
    """The kernels' cutoff decision in float32 (their operation order), (P, K) bool."""
    with np.errstate(all="ignore"):
        d0 = pa[:, None] - m2[None, :, 0]
        d1 = pb[:, None] - m2[None, :, 1]
        A, Bc, C = conic[None, :, 0], conic[None, :, 1], conic[None, :, 2]
        q = A * d0 * d0 + np.float32(2) * Bc * d0 * d1 + C * d1 * d1
        return np.isfinite(q) & (q <= np.float32(c2))


def reference(case: dict, additive: bool, grad_out=None, grad_alpha=None):
    """float64 (out (B,F,H,W), alpha (B,H,W)) and, given upstream gradients, the gradients
    [g_m2, g_conic, g_wpeak, g_values] of <out, grad_out> + <alpha, grad_alpha>."""
    m2 = case["m2"].double().requires_grad_()
    conic = case["conic"].double().requires_grad_()
    wpeak = case["wpeak"].double().requires_grad_()
    values = case["values"].double().requires_grad_()
    order = case["order"]
    H, W, ps, cutoff = case["H"], case["W"], case["ps"], case["cutoff"]
    B, N = order.shape
    F = values.shape[1]
    rr, cc = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    pa32 = (rr.reshape(-1).float() * torch.tensor(ps[0], dtype=F32)).numpy()
    pb32 = (cc.reshape(-1).float() * torch.tensor(ps[1], dtype=F32)).numpy()
    pa, pb = torch.from_numpy(pa32).double(), torch.from_numpy(pb32).double()
    c2 = np.float32(cutoff * cutoff)
    outs, alphas = [], []
    for b in range(B):
        gs = order[b][order[b] >= 0]
        if len(gs) == 0:
            outs.append(torch.zeros(F, H, W, dtype=D64) + 0 * values.sum())
            alphas.append(torch.zeros(H, W, dtype=D64) + 0 * wpeak.sum())
            continue
        mask = torch.from_numpy(_hit_mask_f32(pa32, pb32, case["m2"][b, gs].numpy(),
                                              case["conic"][b, gs].numpy(), c2))
        mb, cb = m2[b, gs], conic[b, gs]
        d0 = pa[:, None] - mb[None, :, 0]
        d1 = pb[:, None] - mb[None, :, 1]
        q = cb[None, :, 0] * d0 * d0 + 2 * cb[None, :, 1] * d0 * d1 + cb[None, :, 2] * d1 * d1
        q = torch.where(mask, q, torch.zeros_like(q))       # no NaN into the masked branch
        w = torch.clamp(wpeak[b, gs][None, :] * torch.exp(-0.5 * q.clamp_min(0)), max=W_MAX)
        w = torch.where(mask, w, torch.zeros_like(w))
        if additive:
            contrib = w
            alpha = w.sum(1)
        else:
            om = 1 - w
            T = torch.cat([torch.ones_like(om[:, :1]), torch.cumprod(om, 1)[:, :-1]], 1)
            contrib = w * T
            alpha = 1 - torch.prod(om, 1)
        outs.append((contrib @ values[gs]).T.reshape(F, H, W))
        alphas.append(alpha.reshape(H, W))
    out, alpha = torch.stack(outs), torch.stack(alphas)
    if grad_out is None:
        return out.detach(), alpha.detach()
    loss = (out * grad_out.double()).sum() + (alpha * grad_alpha.double()).sum()
    grads = torch.autograd.grad(loss, [m2, conic, wpeak, values], allow_unused=True)
    grads = [torch.zeros_like(t) if gr is None else gr
             for gr, t in zip(grads, (m2, conic, wpeak, values))]
    return out.detach(), alpha.detach(), grads


def assert_close_forward(got, ref, rtol, atol_rel, what):
    got, ref = got.double(), ref.double()
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    assert torch.isfinite(got).all(), f"{what}: not finite"
    scale = max(ref.abs().max().item(), 1e-30) if ref.numel() else 1.0
    err = (got - ref).abs()
    bad = err > rtol * ref.abs() + atol_rel * scale
    assert not bad.any(), (f"{what}: {int(bad.sum())} elements off, max error "
                           f"{err.max().item():.3g} (max |ref| {scale:.3g})")


def assert_grads(got, ref, rtol=1e-4, row_rtol=1e-3):
    """Every gradient tensor within rtol (Frobenius), every row (pair / Gaussian) within
    row_rtol of its own norm + 1e-5 of the largest row norm."""
    for name, a, b in zip(("m2", "conic", "wpeak", "values"), got, ref):
        assert a.shape == b.shape, (name, a.shape, b.shape)
        n = b.shape[0] * b.shape[1] if b.dim() == 3 else b.shape[0]
        a, b = a.double().reshape(n, -1), b.double().reshape(n, -1)
        assert torch.isfinite(a).all(), f"{name}: not finite"
        nb = b.norm().item()
        if nb == 0:
            assert a.norm().item() == 0, name
            continue
        assert (a - b).norm().item() <= rtol * nb, \
            f"{name}: relative error {(a - b).norm().item() / nb:.3g}"
        rows, err = b.norm(dim=1), (a - b).norm(dim=1)
        bad = err > row_rtol * rows + 1e-5 * rows.max()
        assert not bad.any(), f"{name}: rows {bad.nonzero().flatten()[:8].tolist()} off"


def expected_lists(case: dict):
    """Which (slice, rank) items the kernels' tile lists must hold, in order, per (slice, tile)
    key, computed densely: every item whose pair has a pixel inside its cutoff ellipse in a
    tile belongs to that tile's list (the lists may hold more: the boxes are conservative)."""
    H, W = case["H"], case["W"]
    B, N = case["order"].shape
    ty, tx = -(-H // 16), -(-W // 16)
    rr, cc = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    pa32 = (rr.reshape(-1).float() * torch.tensor(case["ps"][0], dtype=F32)).numpy()
    pb32 = (cc.reshape(-1).float() * torch.tensor(case["ps"][1], dtype=F32)).numpy()
    key_of_px = ((rr // 16) * tx + cc // 16).reshape(-1).numpy()
    need = {}
    for b in range(B):
        ks = (case["order"][b] >= 0).nonzero().flatten()
        if len(ks) == 0:
            continue
        gs = case["order"][b, ks]
        mask = _hit_mask_f32(pa32, pb32, case["m2"][b, gs].numpy(), case["conic"][b, gs].numpy(),
                             np.float32(case["cutoff"] ** 2))
        for col, k in enumerate(ks.tolist()):
            for key in np.unique(key_of_px[mask[:, col]]):
                need.setdefault(b * ty * tx + int(key), []).append(b * N + k)
    return need, B * ty * tx
