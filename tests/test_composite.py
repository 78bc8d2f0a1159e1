"""Tests of the compositing slice rasterizer of seed 004 (gaussian_ops/composite.py): a slow
dense float64 reference written here independently (full 3D Gaussian, explicit loops), the
compositing order and its tie rule, the additive mode, cutoffs, transmittance, gradcheck."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from volbench.gaussian_ops import axial_cameras
from volbench.gaussian_ops.composite import composite_slices, slice_factors

D64 = torch.float64


# ----------------------------------------------------------------------------- reference

def _rotmat(q):
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def reference(means, log_scales, quats, opac, colors, feats, slice_z, H, W, pixel_size,
              origin, mode="composite", cutoff=3.0):
    """Dense, loop-based: w_i = opacity * exp(-1/2 d^T inv(S) d) (the full 3D Gaussian, whose
    factors are p = exp(-1/2 dz^2/S_zz) and the conditional), zero when the 1D (dz^2/S_zz) or
    the 2D (d^T inv(S) d - dz^2/S_zz) Mahalanobis distance exceeds the cutoff; Gaussians taken
    by (|mu_z - t|, index)."""
    mu = means.detach().numpy().astype(np.float64)
    ls = log_scales.detach().numpy().astype(np.float64)
    qs = quats.detach().numpy().astype(np.float64)
    op = opac.detach().numpy().astype(np.float64)
    col = colors.detach().numpy().astype(np.float64).reshape(len(mu), -1)
    vals = col if feats is None else np.concatenate(
        [col, feats.detach().numpy().astype(np.float64)], 1)
    N, K = vals.shape
    Sinv, Szz = [], []
    for i in range(N):
        R = _rotmat(qs[i])
        S = R @ np.diag(np.exp(2 * ls[i])) @ R.T
        Sinv.append(np.linalg.inv(S))
        Szz.append(S[0, 0])
    out = np.zeros((len(slice_z), K, H, W))
    alpha = np.zeros((len(slice_z), H, W))
    c2 = cutoff * cutoff
    for b, t in enumerate(slice_z):
        order = sorted(range(N), key=lambda i: (abs(mu[i, 0] - t), i))
        for r in range(H):
            for c in range(W):
                x = np.array([t, origin[1] + r * pixel_size[0], origin[2] + c * pixel_size[1]])
                T = 1.0
                for i in order:
                    d = x - mu[i]
                    q3 = d @ Sinv[i] @ d
                    q1 = d[0] ** 2 / Szz[i]
                    if q1 > c2 or q3 - q1 > c2:
                        continue
                    w = op[i] * math.exp(-0.5 * q3)
                    if mode == "composite":
                        out[b, :, r, c] += T * w * vals[i]
                        alpha[b, r, c] += T * w
                        T *= 1 - w
                    else:
                        out[b, :, r, c] += w * vals[i]
                        alpha[b, r, c] += w
    return out, alpha


def random_case(n, seed=0, C=None, K=None, shape=(8.0, 10.0, 9.0)):
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g, dtype=D64) * torch.tensor(shape, dtype=D64)
    ls = torch.log(0.6 + 1.6 * torch.rand(n, 3, generator=g, dtype=D64))
    quats = torch.randn(n, 4, generator=g, dtype=D64)
    op = 0.1 + 0.85 * torch.rand(n, generator=g, dtype=D64)
    col = torch.rand(n, generator=g, dtype=D64) if C is None else \
        torch.rand(n, C, generator=g, dtype=D64)
    feat = None if K is None else torch.randn(n, K, generator=g, dtype=D64)
    return means, ls, quats, op, col, feat


ORIGIN = (0.5, -0.25, 0.3)
DZ = 1.5


def cams_for(indices):
    return axial_cameras(indices, (DZ, 1.0, 1.0), ORIGIN, dtype=D64)


def slice_z(indices):
    return [ORIGIN[0] + k * DZ for k in indices]


# ----------------------------------------------------------------------------- tests

@pytest.mark.parametrize("mode", ["composite", "additive"])
@pytest.mark.parametrize("C,K", [(None, None), (3, 2)])
def test_matches_dense_reference(mode, C, K):
    idx = [1, 3, 4]
    H, W, ps = 9, 8, (1.0, 1.25)
    means, ls, quats, op, col, feat = random_case(14, seed=3, C=C, K=K)
    r = composite_slices(means, ls, quats, op, col, cams_for(idx), (H, W), ps, features=feat,
                         mode=mode)
    ref, ref_alpha = reference(means, ls, quats, op, col, feat, slice_z(idx), H, W, ps, ORIGIN,
                               mode)
    nc = 1 if C is None else C
    img = r.image[:, None] if C is None else r.image
    assert img.shape == (3, nc, H, W)
    np.testing.assert_allclose(img.numpy(), ref[:, :nc], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(r.alpha.numpy(), ref_alpha, rtol=1e-10, atol=1e-12)
    if K is None:
        assert r.semantics is None
    else:
        assert r.semantics.shape == (3, K, H, W)
        np.testing.assert_allclose(r.semantics.numpy(), ref[:, nc:], rtol=1e-10, atol=1e-12)
    assert float(r.image.abs().sum()) > 0  # the case is not empty
    if mode == "composite":
        assert float(r.alpha.max()) <= 1.0


def test_factorisation_is_the_3d_gaussian():
    """p * conditional = 3D Gaussian at every point of the plane; the conditional is the
    Schur complement."""
    means, ls, quats, *_ = random_case(5, seed=1)
    cams = cams_for([2])
    m_n, c_nn, m2, S2 = slice_factors(means, ls, quats, cams)
    from volbench.gaussian_ops import covariance
    S = covariance(ls, quats)
    g = torch.Generator().manual_seed(9)
    for i in range(5):
        for _ in range(4):
            ab = torch.randn(2, generator=g, dtype=D64) * 2 + m2[0, i]
            x = torch.tensor([slice_z([2])[0], ORIGIN[1] + ab[0], ORIGIN[2] + ab[1]], dtype=D64)
            d3 = x - means[i]
            g3 = torch.exp(-0.5 * d3 @ torch.linalg.solve(S[i], d3))
            p = torch.exp(-0.5 * m_n[0, i] ** 2 / c_nn[0, i])
            d2 = ab - m2[0, i]
            g2 = torch.exp(-0.5 * d2 @ torch.linalg.solve(S2[0, i], d2))
            assert torch.allclose(p * g2, g3, rtol=1e-12, atol=1e-14)


def _stack(zs, colors, opacity=0.7, scale=1.0, yx=(3.0, 4.0)):
    n = len(zs)
    means = torch.tensor([[z, yx[0], yx[1]] for z in zs], dtype=D64)
    ls = torch.full((n, 3), math.log(scale), dtype=D64)
    quats = torch.tensor([[1.0, 0, 0, 0]] * n, dtype=D64)
    op = torch.full((n,), opacity, dtype=D64) if not torch.is_tensor(opacity) else opacity
    return means, ls, quats, op, torch.tensor(colors, dtype=D64)


def _plane(t):
    return axial_cameras([0], (1.0, 1.0, 1.0), (t, 0.0, 0.0), dtype=D64)


def test_order_nearest_first():
    t = 5.0
    zs = [6.0, 5.5, 3.5]          # distances 1.0, 0.5, 1.5 -> order 1, 0, 2
    cols = [0.2, 0.9, 0.5]
    means, ls, quats, op, col = _stack(zs, cols)
    r = composite_slices(means, ls, quats, op, col, _plane(t), (8, 8))
    w = [0.7 * math.exp(-0.5 * (z - t) ** 2) for z in zs]
    expect = w[1] * cols[1] + (1 - w[1]) * w[0] * cols[0] + (1 - w[1]) * (1 - w[0]) * w[2] * cols[2]
    by_z = w[2] * cols[2] + (1 - w[2]) * w[1] * cols[1] + (1 - w[2]) * (1 - w[1]) * w[0] * cols[0]
    got = float(r.image[0, 3, 4])
    assert got == pytest.approx(expect, rel=1e-12)
    assert abs(got - by_z) > 1e-3  # the order matters in this case
    # permuting the Gaussians' indices does not change a tie-free render
    perm = [2, 0, 1]
    r2 = composite_slices(means[perm], ls[perm], quats[perm], op[perm], col[perm], _plane(t),
                          (8, 8))
    assert torch.allclose(r.image, r2.image, rtol=1e-12, atol=1e-14)


def test_ties_by_index():
    t = 5.0
    means, ls, quats, op, col = _stack([4.5, 5.5], [0.1, 0.8], opacity=0.9)
    r = composite_slices(means, ls, quats, op, col, _plane(t), (8, 8))
    w = 0.9 * math.exp(-0.5 * 0.25)
    assert float(r.image[0, 3, 4]) == pytest.approx(w * 0.1 + (1 - w) * w * 0.8, rel=1e-12)
    # swap the indices: the other one is in front now
    r2 = composite_slices(means.flip(0), ls, quats, op, col.flip(0), _plane(t), (8, 8))
    assert float(r2.image[0, 3, 4]) == pytest.approx(w * 0.8 + (1 - w) * w * 0.1, rel=1e-12)


def test_additive_is_plain_sum():
    means, ls, quats, op, col, feat = random_case(10, seed=5, K=2)
    cams = cams_for([2, 3])
    r = composite_slices(means, ls, quats, op, col, cams, (9, 8), features=feat,
                         mode="additive")
    total = torch.zeros_like(r.image)
    tsem = torch.zeros_like(r.semantics)
    for i in range(10):  # one Gaussian at a time: no occlusion, composite = additive
        s = slice(i, i + 1)
        ri = composite_slices(means[s], ls[s], quats[s], op[s], col[s], cams, (9, 8),
                              features=feat[s])
        total += ri.image
        tsem += ri.semantics
    assert torch.allclose(r.image, total, rtol=1e-12, atol=1e-14)
    assert torch.allclose(r.semantics, tsem, rtol=1e-12, atol=1e-14)
    ones = composite_slices(means, ls, quats, op, torch.ones(10, dtype=D64), cams, (9, 8),
                            mode="additive")
    assert torch.allclose(ones.image, r.alpha, rtol=1e-12, atol=1e-14)
    comp = composite_slices(means, ls, quats, op, col, cams, (9, 8))
    assert bool((comp.image <= r.image + 1e-12).all())  # colours >= 0: occlusion only removes
    assert float((r.image - comp.image).max()) > 1e-3


@pytest.mark.parametrize("mode", ["composite", "additive"])
def test_far_gaussian_contributes_nothing(mode):
    means, ls, quats, op, col, feat = random_case(6, seed=7, K=2)
    t = slice_z([2])[0]
    # far along z (3.2 sigma from the plane) and far in the plane (outside the image), opaque
    far_m = torch.tensor([[t + 3.2 * 0.5, 4.0, 4.0], [t, 40.0, 4.0]], dtype=D64)
    far_ls = torch.full((2, 3), math.log(0.5), dtype=D64)
    far_q = torch.tensor([[1.0, 0, 0, 0]] * 2, dtype=D64)
    args = [torch.cat(p) for p in ((means, far_m), (ls, far_ls), (quats, far_q),
                                    (op, torch.ones(2, dtype=D64)),
                                    (col, torch.full((2,), 5.0, dtype=D64)),
                                    (feat, torch.full((2, 2), 5.0, dtype=D64)))]
    for a in args:
        a.requires_grad_(True)
    cams = cams_for([2])
    r = composite_slices(*args[:5], cams, (9, 8), features=args[5], mode=mode)
    r0 = composite_slices(means, ls, quats, op, col, cams, (9, 8), features=feat, mode=mode)
    assert torch.equal(r.image.detach(), r0.image)
    assert torch.equal(r.semantics.detach(), r0.semantics)
    (r.image.sum() + r.semantics.sum() + r.alpha.sum()).backward()
    for a in args:
        assert torch.count_nonzero(a.grad[6:]) == 0
    # just inside the 1D cutoff it does contribute
    near = torch.tensor([[t + 2.9 * 0.5, ORIGIN[1] + 4.0, ORIGIN[2] + 4.0]], dtype=D64)
    rn = composite_slices(near, far_ls[:1], far_q[:1], torch.ones(1, dtype=D64),
                          torch.ones(1, dtype=D64), cams, (9, 8), mode=mode)
    assert float(rn.image.max()) == pytest.approx(math.exp(-0.5 * 2.9 ** 2), rel=1e-9)


def test_opaque_front_hides_back():
    # two identical opaque Gaussians on the plane: the front one (tie -> lower index) wins
    means, ls, quats, op, col = _stack([5.0, 5.0], [0.3, 0.9], opacity=1.0)
    for a in (means, op, col):
        a.requires_grad_(True)
    r = composite_slices(means, ls, quats, op, col, _plane(5.0), (8, 8))
    assert float(r.image[0, 3, 4].detach()) == 0.3
    assert float(r.alpha[0, 3, 4].detach()) == 1.0
    r.image.sum().backward()  # w = 1 at the centre: the cumprod backward stays finite
    for a in (means, op, col):
        assert torch.isfinite(a.grad).all()
    # the back one is nearer-first only if it is nearer: move it off the plane -> still hidden
    means2, ls2, quats2, op2, col2 = _stack([5.0, 5.4], [0.3, 0.9], opacity=1.0)
    r2 = composite_slices(means2.flip(0), ls2, quats2, op2, col2.flip(0), _plane(5.0), (8, 8))
    assert float(r2.image[0, 3, 4]) == 0.3
    # additive mode adds them up instead
    ra = composite_slices(means.detach(), ls, quats, op.detach(), col.detach(), _plane(5.0),
                          (8, 8), mode="additive")
    assert float(ra.image[0, 3, 4]) == pytest.approx(1.2, rel=1e-12)


def test_semantics_equal_colours():
    means, ls, quats, op, col, _ = random_case(12, seed=11, C=3)
    cams = cams_for([0, 2, 5])
    r = composite_slices(means, ls, quats, op, col, cams, (9, 8), features=col)
    assert torch.equal(r.semantics, r.image)
    g = composite_slices(means, ls, quats, op, col[:, 0], cams, (9, 8), features=col[:, :1])
    assert torch.equal(g.semantics[:, 0], g.image)
    assert torch.allclose(g.image, r.image[:, 0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mode", ["composite", "additive"])
def test_gradcheck(mode):
    means, ls, quats, op, col, feat = random_case(4, seed=2, K=2, shape=(4.0, 6.0, 5.0))
    inputs = [x.clone().requires_grad_(True) for x in (means, ls, quats, op, col, feat)]
    cams = cams_for([1, 2])

    def f(m, s, q, o, c, k):
        r = composite_slices(m, s, q, o, c, cams, (6, 5), features=k, mode=mode)
        return torch.cat([r.image.reshape(-1), r.semantics.reshape(-1), r.alpha.reshape(-1)])

    with torch.no_grad():
        assert float(f(*inputs).abs().sum()) > 0
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_float32_and_empty():
    means, ls, quats, op, col, feat = random_case(6, seed=4, K=2)
    cams = cams_for([2]).float()
    r32 = composite_slices(means.float(), ls.float(), quats.float(), op.float(), col.float(),
                           cams, (9, 8), features=feat.float())
    r64 = composite_slices(means, ls, quats, op, col, cams_for([2]), (9, 8), features=feat)
    assert r32.image.dtype == torch.float32
    assert torch.allclose(r32.image.double(), r64.image, atol=1e-5)
    # nothing near the plane: zeros, right shapes
    far = means.clone()
    far[:, 0] += 100.0
    re = composite_slices(far, ls, quats, op, col, cams_for([2]), (9, 8), features=feat)
    assert re.image.shape == (1, 9, 8) and re.semantics.shape == (1, 2, 9, 8)
    assert float(re.image.abs().sum()) == 0 and float(re.alpha.abs().sum()) == 0
    with pytest.raises(ValueError):
        composite_slices(means, ls, quats, op, col, cams_for([2]), (9, 8), mode="max")
