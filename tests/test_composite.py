"""Tests of the compositing slice rasterizer of seed 004 (gaussian_ops/composite.py): a slow
dense float64 reference written here independently (full 3D Gaussian, explicit loops), the
compositing order and its tie rule, the additive mode, cutoffs, transmittance, gradcheck (these
run the public API, i.e. whatever backend "auto" picks); then the compiled CPU backend of the
splat stage (gpu_ext/cpu/cpu_composite.cpp) against the PyTorch twin: forward and all gradients
in float32 and float64, edge cases, gradcheck, bit-identical reruns, dispatch."""

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


def test_prelude_moments_match_slice_factors():
    """The prelude's fast path (_slice_moments) is slice_factors' maths; its order puts the kept
    pairs first, nearest first, ties by index, -1 after."""
    from volbench.gaussian_ops.composite import _slice_moments, prelude
    means, ls, quats, op, *_ = random_case(9, seed=12)
    cams = cams_for([1, 3])
    m_n, c_nn, m2, S2 = slice_factors(means, ls, quats, cams)
    f_n, f_nn, f2, s00, s01, s11 = _slice_moments(means, ls, quats, cams)
    for a, b in ((m_n, f_n), (c_nn, f_nn), (m2, f2), (S2[..., 0, 0], s00), (S2[..., 0, 1], s01),
                 (S2[..., 1, 1], s11)):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    _, _, _, order = prelude(means, ls, quats, op, cams)
    for b in range(2):
        keep = (m_n[b] ** 2 <= 9 * c_nn[b]).nonzero().squeeze(1).tolist()
        expect = sorted(keep, key=lambda i: (abs(float(m_n[b, i])), i))
        assert order[b].tolist() == expect + [-1] * (9 - len(expect))


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
    # w = min(1, W_MAX) = 0.99 at the centre (the clamp of every backend): 1 % of the back shows
    assert float(r.image[0, 3, 4].detach()) == pytest.approx(0.99 * 0.3 + 0.01 * 0.99 * 0.9,
                                                             rel=1e-12)
    assert float(r.alpha[0, 3, 4].detach()) == pytest.approx(1 - 0.01 ** 2, rel=1e-12)
    r.image.sum().backward()
    for a in (means, op, col):
        assert torch.isfinite(a.grad).all()
    assert float(op.grad[0]) != 0.0  # not clamped away from the centre
    # the back one is nearer-first only if it is nearer: move it off the plane -> still behind
    means2, ls2, quats2, op2, col2 = _stack([5.0, 5.4], [0.3, 0.9], opacity=1.0)
    r2 = composite_slices(means2.flip(0), ls2, quats2, op2, col2.flip(0), _plane(5.0), (8, 8))
    w_back = math.exp(-0.5 * 0.4 ** 2)
    assert float(r2.image[0, 3, 4]) == pytest.approx(0.99 * 0.3 + 0.01 * w_back * 0.9, rel=1e-12)
    # additive mode adds them up instead (each clamped)
    ra = composite_slices(means.detach(), ls, quats, op.detach(), col.detach(), _plane(5.0),
                          (8, 8), mode="additive")
    assert float(ra.image[0, 3, 4]) == pytest.approx(0.99 * 1.2, rel=1e-12)


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


# ----------------------------------------------------------------------------- CPU backend

from volbench.gaussian_ops import backend as gbackend  # noqa: E402
from volbench.gaussian_ops import composite as comp_mod  # noqa: E402

F32 = torch.float32


@pytest.fixture(scope="module")
def cpu_ext():
    """The compiled CPU backend with the compositing splat stage, or a clean skip."""
    mod = gbackend.load_cpu()
    if mod is None:
        pytest.skip(f"CPU backend volbench_cpu_ext not built: {gbackend.cpu_reason()}")
    if not hasattr(mod, "composite_fwd"):
        pytest.skip("volbench_cpu_ext has no composite_fwd (built from older sources)")
    return mod


@pytest.fixture
def threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def edge_case(name):
    """(means, log_scales, quats, opacities, colours, features, cameras, (H, W), pixel_size)."""
    H, W, ps = 11, 10, (1.0, 1.25)
    if name == "grey":
        means, ls, quats, op, col, feat = random_case(30, seed=21)
        return means, ls, quats, op, col, feat, cams_for([1, 3, 4]), (H, W), ps
    if name in ("colour", "features"):
        means, ls, quats, op, col, feat = random_case(30, seed=22, C=3,
                                                      K=2 if name == "features" else None)
        return means, ls, quats, op, col, feat, cams_for([0, 2, 5]), (H, W), ps
    if name == "ties":  # equal |m_n| on both sides of the plane, and exact duplicates
        t = slice_z([2])[0]
        g = torch.Generator().manual_seed(23)
        n = 16
        dz = torch.tensor([0.5, -0.5, 0.0, 0.0] * 4, dtype=D64)
        yx = torch.rand(n // 2, 2, generator=g, dtype=D64).repeat_interleave(2, 0) * 6 + 1
        means = torch.cat([t + dz[:, None], yx], 1)
        ls = torch.log(0.8 + torch.rand(n, 3, generator=g, dtype=D64))
        ls[1::2] = ls[0::2]
        quats = torch.randn(n, 4, generator=g, dtype=D64)
        quats[1::2] = quats[0::2]
        op = 0.3 + 0.7 * torch.rand(n, generator=g, dtype=D64)   # up to 1: the clamp is hit
        col = torch.rand(n, 3, generator=g, dtype=D64)
        return means, ls, quats, op, col, None, cams_for([2]), (H, W), ps
    if name == "edge":  # centres near, on and beyond the image border (pixel extent 10 x 11.25)
        g = torch.Generator().manual_seed(24)
        n = 24
        yx = torch.stack([torch.rand(n, generator=g, dtype=D64) * 16 - 3,
                          torch.rand(n, generator=g, dtype=D64) * 18 - 3.5], 1)
        z = slice_z([1])[0] + torch.randn(n, generator=g, dtype=D64) * 0.5
        means = torch.cat([z[:, None], ORIGIN[1] + yx[:, :1], ORIGIN[2] + yx[:, 1:]], 1)
        ls = torch.log(0.7 + 1.5 * torch.rand(n, 3, generator=g, dtype=D64))
        quats = torch.randn(n, 4, generator=g, dtype=D64)
        op = 0.2 + 0.8 * torch.rand(n, generator=g, dtype=D64)
        col = torch.rand(n, generator=g, dtype=D64)
        feat = torch.randn(n, 3, generator=g, dtype=D64)
        return means, ls, quats, op, col, feat, cams_for([1]), (H, W), ps
    if name == "dropped":  # half of the pairs just beyond the 1D cutoff (3 sigma), half inside
        g = torch.Generator().manual_seed(25)
        n = 20
        t = slice_z([3])[0]
        sig = 0.6 + torch.rand(n, generator=g, dtype=D64)
        k = torch.where(torch.arange(n) % 2 == 0, torch.full((n,), 3.05, dtype=D64),
                        torch.full((n,), 2.9, dtype=D64))
        sign = torch.where(torch.rand(n, generator=g, dtype=D64) < 0.5, -1.0, 1.0)
        yx = torch.rand(n, 2, generator=g, dtype=D64) * 8 + 1
        means = torch.cat([(t + sign * k * sig)[:, None], yx], 1)
        ls = torch.log(sig)[:, None].expand(n, 3).contiguous()
        quats = torch.tensor([[1.0, 0, 0, 0]] * n, dtype=D64)   # axis-aligned: C_nn = sig^2
        op = torch.ones(n, dtype=D64)
        col = torch.rand(n, generator=g, dtype=D64)
        return means, ls, quats, op, col, None, cams_for([3]), (H, W), ps
    if name == "empty_slice":  # the middle slice meets no Gaussian
        means, ls, quats, op, col, feat = random_case(12, seed=26, K=1)
        return means, ls, quats, op, col, feat, cams_for([1, 40, 2]), (H, W), ps
    if name == "n0":
        means, ls, quats, op, col, feat = random_case(0, seed=27, K=2)
        return means, ls, quats, op, col, feat, cams_for([1, 2]), (H, W), ps
    raise KeyError(name)


CASES = ["grey", "colour", "features", "ties", "edge", "dropped", "empty_slice", "n0"]


def run_backend(case, mode, dtype, which):
    """Outputs (image, semantics, alpha) and the gradients of all inputs of a weighted sum."""
    means, ls, quats, op, col, feat, cams, hw, ps = edge_case(case)
    ins = [None if x is None else x.to(dtype).clone().requires_grad_(True)
           for x in (means, ls, quats, op, col, feat)]
    r = composite_slices(*ins[:5], cams.to(dtype), hw, ps, features=ins[5], mode=mode,
                         backend=which)
    g = torch.Generator().manual_seed(5)
    loss = (r.alpha * torch.rand(r.alpha.shape, generator=g, dtype=D64).to(dtype)).sum()
    for t in (r.image, r.semantics):
        if t is not None:
            wgt = torch.rand(t.shape, generator=g, dtype=D64)
            wgt[wgt < 0.1] = 0
            loss = loss + (t * wgt.to(dtype)).sum()
    if loss.requires_grad:
        loss.backward()
    outs = [r.image.detach(), None if r.semantics is None else r.semantics.detach(),
            r.alpha.detach()]
    grads = [None if x is None else (x.grad if x.grad is not None else torch.zeros_like(x))
             for x in ins]
    return outs, grads


def assert_close(a, b, rel, what):
    assert a.shape == b.shape and a.dtype == b.dtype, what
    assert torch.isfinite(a).all(), what
    scale = max(float(b.abs().max()) if b.numel() else 0.0, 1e-30)
    err = float((a - b).abs().max()) if b.numel() else 0.0
    assert err <= rel * scale, f"{what}: max error {err:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("dtype", [F32, D64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", ["composite", "additive"])
@pytest.mark.parametrize("case", CASES)
def test_cpu_backend_matches_twin(cpu_ext, case, mode, dtype):
    (o_c, g_c), (o_t, g_t) = (run_backend(case, mode, dtype, w) for w in ("cpu", "twin"))
    rel_out, rel_grad = (1e-5, 1e-4) if dtype == F32 else (1e-12, 1e-10)
    for a, b, what in zip(o_c, o_t, ("image", "semantics", "alpha")):
        if b is None:
            assert a is None
        else:
            assert_close(a, b, rel_out, what)
    names = ("means", "log_scales", "quats", "opacities", "colours", "features")
    for a, b, what in zip(g_c, g_t, names):
        if b is not None:
            assert_close(a, b, rel_grad, f"grad {what}")
    if case in ("n0",):
        assert float(o_c[2].abs().sum()) == 0
    elif case == "empty_slice":
        assert float(o_c[2][1].abs().sum()) == 0 and float(o_c[2][0].abs().sum()) > 0
    else:
        assert float(o_c[2].abs().sum()) > 0
    if case == "dropped":  # the pairs beyond the 1D cutoff get nothing, the others do
        assert torch.count_nonzero(g_c[3][0::2]) == 0
        assert bool((g_c[3][1::2] != 0).all())


def test_cpu_backend_hits_the_clamp(cpu_ext):
    """An opaque Gaussian on the plane: w = W_MAX = 0.99 near its centre on both paths."""
    means, ls, quats, op, col = _stack([5.0, 5.0], [0.3, 0.9], opacity=1.0)
    for which in ("cpu", "twin"):
        r = composite_slices(means, ls, quats, op, col, _plane(5.0), (8, 8), backend=which)
        assert float(r.alpha.max()) == pytest.approx(1 - 0.01 ** 2, rel=1e-12)


@pytest.mark.parametrize("mode", ["composite", "additive"])
def test_cpu_backend_gradcheck(cpu_ext, mode):
    means, ls, quats, op, col, feat = random_case(5, seed=2, K=2, shape=(4.0, 6.0, 5.0))
    inputs = [x.clone().requires_grad_(True) for x in (means, ls, quats, op, col, feat)]
    cams = cams_for([1, 2])

    def f(m, s, q, o, c, k):
        r = composite_slices(m, s, q, o, c, cams, (6, 5), features=k, mode=mode, backend="cpu")
        return torch.cat([r.image.reshape(-1), r.semantics.reshape(-1), r.alpha.reshape(-1)])

    with torch.no_grad():
        assert float(f(*inputs).abs().sum()) > 0
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("additive", [False, True])
def test_cpu_splat_stage_gradcheck_with_clamp_and_padding(cpu_ext, additive):
    from volbench.gaussian_ops.composite import W_MAX

    """The splat stage alone on contract inputs: -1 padding, a pair absent from a slice,
    wpeak above W_MAX at a centre (the clamped branch: zero gradient), non-PD-free conics."""
    g = torch.Generator().manual_seed(31)
    B, N, H, W = 2, 4, 7, 6
    m2 = (torch.rand(B, N, 2, generator=g, dtype=D64) * torch.tensor([6.0, 5.0], dtype=D64))
    a = 0.3 + 0.5 * torch.rand(B, N, generator=g, dtype=D64)
    c = 0.3 + 0.5 * torch.rand(B, N, generator=g, dtype=D64)
    bc = 0.1 * torch.randn(B, N, generator=g, dtype=D64)
    conic = torch.stack([a, bc, c], -1)
    wpeak = 0.2 + 0.7 * torch.rand(B, N, generator=g, dtype=D64)
    wpeak[0, 1] = 0.999
    m2[0, 1] = torch.tensor([3.0, 2.0], dtype=D64)   # on a pixel: its centre is clamped
    order = torch.tensor([[2, 0, 1, 3], [3, 1, 0, -1]])
    values = torch.rand(N, 3, generator=g, dtype=D64)
    geom = (H, W, 1.0, 1.0, 3.0, additive)
    ins = [t.clone().requires_grad_(True) for t in (m2, conic, wpeak, values)]

    def f(m, cn, w, v):
        out, alpha = comp_mod._CompositeSplat.apply(m, cn, w, order, v, geom, "cpu")
        return torch.cat([out.reshape(-1), alpha.reshape(-1)])

    def ft(m, cn, w, v):
        out, alpha = comp_mod.splat_twin(m, cn, w, order, v, *geom)
        return torch.cat([out.reshape(-1), alpha.reshape(-1)])

    assert torch.allclose(f(*ins), ft(*ins), rtol=1e-13, atol=1e-15)
    with torch.no_grad():  # the clamped centre pixel (3, 2) of slice 0: w = W_MAX
        solo = torch.tensor([[1, -1, -1, -1], [-1] * 4])
        one = comp_mod._CompositeSplat.apply(m2, conic, wpeak, solo, values, geom, "cpu")[1]
    assert float(one[0, 3, 2]) == W_MAX
    assert torch.autograd.gradcheck(f, ins, eps=1e-6, atol=1e-7, rtol=1e-6)
    go = torch.rand(f(*ins).shape, generator=g, dtype=D64)
    gc = torch.autograd.grad(f(*ins), ins, go)
    gt = torch.autograd.grad(ft(*ins), ins, go)
    for x, y in zip(gc, gt):
        assert torch.allclose(x, y, rtol=1e-11, atol=1e-13)
    assert float(gc[2][1, 2]) == 0.0 and torch.count_nonzero(gc[1][1, 2]) == 0  # absent pair
    assert float(gc[2][0, 1]) != 0.0


@pytest.mark.parametrize("dtype", [F32, D64], ids=["f32", "f64"])
def test_cpu_backend_bit_identical_reruns(cpu_ext, threads, dtype):
    torch.set_num_threads(2)
    first = run_backend("features", "composite", dtype, "cpu")
    for _ in range(2):
        again = run_backend("features", "composite", dtype, "cpu")
        for a, b in zip(first[0] + first[1], again[0] + again[1]):
            assert torch.equal(a, b)
    # the forward is bit-identical whatever the thread count, too
    torch.set_num_threads(1)
    one = run_backend("features", "composite", dtype, "cpu")
    for a, b in zip(first[0], one[0]):
        assert torch.equal(a, b)


def test_dispatch(cpu_ext, monkeypatch):
    monkeypatch.delenv(gbackend.BACKEND_ENV, raising=False)
    means, ls, quats, op, col, feat = random_case(6, seed=4, K=2)
    calls = []
    real = comp_mod.splat_twin

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(comp_mod, "splat_twin", spy)
    for dt in (F32, D64):
        assert comp_mod.splat_backend(means.to(dt), ls.to(dt)) == "cpu"
        composite_slices(means.to(dt), ls.to(dt), quats.to(dt), op.to(dt), col, cams_for([2]),
                         (5, 4), features=feat)
    assert calls == []
    composite_slices(means, ls, quats, op, col, cams_for([2]), (5, 4), backend="twin")
    assert calls == [1]
    # other dtypes -> the twin; a forced compiled backend that cannot run raises
    assert comp_mod.splat_backend(means.to(torch.bfloat16)) == "twin"
    with pytest.raises(ValueError):
        comp_mod.splat_backend(means.to(torch.bfloat16), backend="cpu")
    with pytest.raises(ValueError):
        comp_mod.splat_backend(means, backend="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError):
            comp_mod.splat_backend(means, backend="cuda")
    # VOLBENCH_GAUSSIAN_BACKEND=twin forces the twin (ops.py's rule, one warning)
    monkeypatch.setenv(gbackend.BACKEND_ENV, "twin")
    monkeypatch.setitem(gbackend._cpu_state, "forced_warned", True)
    assert comp_mod.splat_backend(means) == "twin"
    composite_slices(means, ls, quats, op, col, cams_for([2]), (5, 4))
    assert calls == [1, 1]
