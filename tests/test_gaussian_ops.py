"""Tests of the Gaussian operators' PyTorch twin (CPU): exactness against dense references, the
focus-model facts of seed 000 (focus-model.md items 1-3), ROI/chunking, gradcheck in float64."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from volbench.gaussian_ops import axial_cameras, covariance, rasterize_slices, uses_cuda, voxelize
from volbench.gaussian_ops import fixed
from volbench.gaussian_ops import torch_impl as twin

D64 = torch.float64


def random_gaussians(n, lo, hi, scale_range=(0.4, 2.0), seed=0, dtype=D64):
    g = torch.Generator().manual_seed(seed)
    lo = torch.as_tensor(lo, dtype=dtype)
    hi = torch.as_tensor(hi, dtype=dtype)
    means = lo + (hi - lo) * torch.rand(n, 3, generator=g, dtype=dtype)
    s0, s1 = scale_range
    ls = torch.log(s0 + (s1 - s0) * torch.rand(n, 3, generator=g, dtype=dtype))
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    amps = 0.2 + torch.rand(n, generator=g, dtype=dtype)
    return means, ls, quats, amps


def dense_voxelize(means, ls, quats, amps, shape, spacing, origin, cutoff):
    """Brute force: every voxel x every Gaussian with an explicit matrix inverse."""
    R = twin.quat_to_rotmat(quats)
    P = R @ torch.diag_embed(torch.exp(-2 * ls)) @ R.transpose(-1, -2)  # inv(S), no matrix inverse
    axes = [origin[a] + spacing[a] * torch.arange(shape[a], dtype=means.dtype) for a in range(3)]
    X = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    d = X[:, None, :] - means[None]
    m = torch.einsum("vni,nij,vnj->vn", d, P, d)
    val = torch.where(m <= cutoff**2, amps[None] * torch.exp(-0.5 * m), torch.zeros_like(m))
    return val.sum(1).reshape(shape)


def random_rotation(g, dtype=D64):
    q = torch.randn(1, 4, generator=g, dtype=dtype)
    return twin.quat_to_rotmat(q)[0]


def random_cameras(B, seed=1, dtype=D64):
    g = torch.Generator().manual_seed(seed)
    cams = torch.zeros(B, 3, 4, dtype=dtype)
    for b in range(B):
        cams[b, :, :3] = random_rotation(g, dtype)
        cams[b, :, 3] = torch.randn(3, generator=g, dtype=dtype) * 2 + torch.tensor([6.0, 6.0, 0.0], dtype=dtype)
    return cams


# ----------------------------------------------------------------------------- basics

def test_quaternion_zero_is_identity_and_rotations_orthonormal():
    q = torch.tensor([[0.0, 0, 0, 0], [2.0, 0, 0, 0], [1.0, 2.0, -0.5, 0.3]], dtype=D64,
                     requires_grad=True)
    R = twin.quat_to_rotmat(q)
    assert torch.allclose(R[0], torch.eye(3, dtype=D64))
    assert torch.allclose(R[1], torch.eye(3, dtype=D64))
    assert torch.allclose(R[2] @ R[2].T, torch.eye(3, dtype=D64), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R[2]), torch.tensor(1.0, dtype=D64))
    R.sum().backward()
    assert torch.isfinite(q.grad).all()
    # 3DGS build_rotation convention: a rotation by angle a about the third (x) axis
    a = 0.3
    Rz = twin.quat_to_rotmat(torch.tensor([[math.cos(a / 2), 0, 0, math.sin(a / 2)]], dtype=D64))[0]
    expect = torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]],
                          dtype=D64)
    assert torch.allclose(Rz, expect, atol=1e-12)


def test_cpu_path_uses_twin_without_warning():
    means, ls, q, a = random_gaussians(3, [0, 0, 0], [4, 4, 4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = voxelize(means.float(), ls.float(), q.float(), a.float(), (4, 4, 4))
    assert out.dtype == torch.float32 and out.shape == (4, 4, 4)
    assert not uses_cuda(means)


# ----------------------------------------------------------------------------- voxelizer

def test_voxelize_matches_dense_reference_with_rotated_needles():
    shape, spacing, origin = (13, 17, 19), (1.5, 1.0, 0.8), (-2.0, 1.0, 0.5)
    means, ls, q, a = random_gaussians(12, [-3, 0, 0], [20, 18, 16], (0.5, 2.5), seed=3)
    # rotated needles straddling tile borders: long axis 4, thin 0.15, rotated 45 degrees
    nm = torch.tensor([[6.0, 8.5, 6.9], [10.0, 9.0, 7.0]], dtype=D64)
    nls = torch.log(torch.tensor([[4.0, 0.15, 0.15], [0.15, 3.0, 0.2]], dtype=D64))
    nq = torch.tensor([[0.92388, 0.0, 0.38268, 0.0], [0.8, 0.3, 0.1, 0.5]], dtype=D64)
    means, ls = torch.cat([means, nm]), torch.cat([ls, nls])
    q, a = torch.cat([q, nq]), torch.cat([a, torch.tensor([1.0, 0.7], dtype=D64)])
    ref = dense_voxelize(means, ls, q, a, shape, spacing, origin, 3.0)
    out = voxelize(means, ls, q, a, shape, spacing, origin, cutoff=3.0)
    assert out.shape == shape and out.dtype == D64
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    # a per-axis-scale bound (ignoring rotation) would truncate the rotated needle: the
    # reference has mass where such a bound would not reach
    wls = torch.log(torch.tensor([[4.0, 0.5, 0.5]], dtype=D64))
    V = dense_voxelize(nm[:1], wls, nq[:1], torch.ones(1, dtype=D64), shape, spacing, origin, 3.0)
    out1 = voxelize(nm[:1], wls, nq[:1], torch.ones(1, dtype=D64), shape, spacing, origin, 3.0)
    torch.testing.assert_close(out1, V, rtol=1e-12, atol=1e-12)
    idx = torch.nonzero(V > 0)
    world = torch.tensor(origin, dtype=D64) + idx.to(D64) * torch.tensor(spacing, dtype=D64)
    naive_half = 3.0 * torch.exp(wls[0])  # per-axis scales, in (z, y, x) order
    beyond = ((world - nm[0]).abs() > naive_half).any(-1)
    assert beyond.sum() > 10, "test geometry should defeat a rotation-blind bound"


def test_voxelize_cutoff_is_exact_and_float32_close():
    means = torch.tensor([[4.0, 4.0, 4.0]])
    ls = torch.zeros(1, 3)
    q = torch.tensor([[1.0, 0, 0, 0]])
    a = torch.ones(1)
    out = voxelize(means, ls, q, a, (9, 9, 9), cutoff=2.0)
    # distance 2 included (exp(-2)), distance 2.236 excluded
    assert out[4, 4, 6].item() == pytest.approx(math.exp(-2.0), rel=1e-6)
    assert out[4, 5, 6].item() == 0.0
    assert out[4, 4, 4].item() == pytest.approx(1.0)
    m64, l64, q64, a64 = random_gaussians(30, [0, 0, 0], [16, 16, 16], seed=5)
    o64 = voxelize(m64, l64, q64, a64, (16, 16, 16))
    o32 = voxelize(m64.float(), l64.float(), q64.float(), a64.float(), (16, 16, 16))
    assert o32.dtype == torch.float32
    torch.testing.assert_close(o32.double(), o64, rtol=1e-4, atol=1e-5 * o64.abs().max().item())


def test_voxelize_float32_far_from_origin():
    """Absolute coordinates ~1e4 (spacing 0.9..1.2): the float32 twin takes mean - origin once, in
    float64, so it stays as close to float64 as near 0 (float32 positions o + i*sp were ~1e-3
    off: forward errors of 1e-3 to 1e-2, means gradient ~1e-3 relative)."""
    origin = (1.0e4, -2.0e4 + 0.3, 1.0e4 + 0.7)
    m, l, q, a = random_gaussians(40, [0, 0, 0], [14, 12, 16], seed=7)
    # means representable in float32, so that only the arithmetic differs
    m = (m + torch.tensor(origin, dtype=torch.float64)).float().double()
    shape, spacing = (14, 12, 16), (1.2, 1.0, 0.9)
    outs, grads = [], []
    for dt in (torch.float64, torch.float32):
        ps = [t.detach().to(dt).clone().requires_grad_() for t in (m, l, q, a)]
        out = voxelize(*ps, shape, spacing, origin)
        (out * torch.linspace(0, 1, out.numel(), dtype=dt).reshape(out.shape)).sum().backward()
        outs.append(out.detach().double())
        grads.append([p.grad.double() for p in ps])
    assert outs[0].abs().max() > 0.5
    err = (outs[1] - outs[0]).abs()
    assert err.max() <= 1e-5 * outs[0].abs().max()
    for g32, g64 in zip(grads[1], grads[0]):
        assert (g32 - g64).norm() <= 1e-4 * g64.norm()


def test_voxelize_roi_slabs_and_chunks_agree():
    shape = (20, 11, 13)
    means, ls, q, a = random_gaussians(25, [0, 0, 0], [20, 11, 13], seed=7)
    full = voxelize(means, ls, q, a, shape)
    slabs = [voxelize(means, ls, q, a, shape, roi=(z, min(z + 6, 20), 0, 11, 0, 13))
             for z in range(0, 20, 6)]
    torch.testing.assert_close(torch.cat(slabs, 0), full, rtol=1e-12, atol=1e-12)
    sub = voxelize(means, ls, q, a, shape, roi=(3, 9, 2, 10, 5, 6))
    torch.testing.assert_close(sub, full[3:9, 2:10, 5:6], rtol=1e-12, atol=1e-12)
    empty = voxelize(means, ls, q, a, shape, roi=(4, 4, 0, 11, 0, 13))
    assert empty.shape == (0, 11, 13)
    A, half = twin.prepare_3d(means, ls, q, 3.0)
    small = twin.splat_voxels(means, A, a, half, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), shape, 3.0,
                              chunk_evals=5000)
    torch.testing.assert_close(small, full, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):
        voxelize(means, ls, q, a, shape, roi=(0, 21, 0, 11, 0, 13))


def test_voxelize_empty_and_outside():
    z = torch.zeros(0, 3)
    out = voxelize(z, z, torch.zeros(0, 4), torch.zeros(0), (5, 6, 7))
    assert out.shape == (5, 6, 7) and out.abs().sum() == 0
    far = torch.tensor([[100.0, 100.0, 100.0]])
    out = voxelize(far, torch.zeros(1, 3), torch.tensor([[1.0, 0, 0, 0]]), torch.ones(1), (5, 6, 7))
    assert out.abs().sum() == 0


# ----------------------------------------------------------------------------- rasterizer

def focus_reference(means, ls, q, op, cams, image_shape, ps, sigma_z, cutoff):
    """Seed 000 eqs. 6-10 written literally with explicit matrix inverses (float64)."""
    S = covariance(ls, q)
    B = cams.shape[0]
    H, W = image_shape
    rr, cc = torch.meshgrid(torch.arange(H, dtype=D64) * ps[0], torch.arange(W, dtype=D64) * ps[1],
                            indexing="ij")
    out = torch.zeros(B, H, W, dtype=D64)
    e3 = torch.tensor([0.0, 0.0, 1.0], dtype=D64)
    for b in range(B):
        Rc, t = cams[b, :, :3], cams[b, :, 3]
        for i in range(means.shape[0]):
            mu_c = Rc @ means[i] + t
            S_c = Rc @ S[i] @ Rc.T
            P_c = torch.linalg.inv(S_c)
            P_e = P_c + torch.outer(e3, e3) / sigma_z**2
            S_e = torch.linalg.inv(P_e)
            mu_e = S_e @ P_c @ mu_c
            opr = torch.exp(-0.5 * (mu_c @ P_c @ mu_c - mu_e @ P_e @ mu_e))
            S2 = S_e[:2, :2]
            C = torch.linalg.inv(S2)
            da, db = rr - mu_e[0], cc - mu_e[1]
            m = C[0, 0] * da * da + 2 * C[0, 1] * da * db + C[1, 1] * db * db
            val = op[i] * opr / torch.sqrt(torch.linalg.det(S2)) * torch.exp(-0.5 * m)
            out[b] += torch.where(m <= cutoff**2, val, torch.zeros_like(val))
    return out


def test_focus_matches_literal_paper_equations():
    means, ls, q, op = random_gaussians(7, [-2, -2, -2], [14, 14, 14], (0.5, 2.0), seed=11)
    cams = random_cameras(3)
    ref = focus_reference(means, ls, q, op, cams, (20, 18), (0.7, 0.8), 1.3, 3.0)
    out = rasterize_slices(means, ls, q, op, cams, (20, 18), (0.7, 0.8), mode="focus",
                           sigma_z=1.3, cutoff=3.0, opacity_threshold=0.0)
    assert out.shape == (3, 20, 18)
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-12)


def _one_gaussian(seed=2):
    g = torch.Generator().manual_seed(seed)
    mean = torch.tensor([[5.0, 4.5, 0.7]], dtype=D64)
    ls = torch.log(torch.tensor([[1.5, 0.8, 1.1]], dtype=D64))
    q = torch.randn(1, 4, generator=g, dtype=D64)
    return mean, ls, q, torch.tensor([0.9], dtype=D64)


def _identity_cam():
    cam = torch.zeros(1, 3, 4, dtype=D64)
    cam[0, :, :3] = torch.eye(3, dtype=D64)
    return cam


def _grid(H, W, ps):
    return torch.meshgrid(torch.arange(H, dtype=D64) * ps, torch.arange(W, dtype=D64) * ps,
                          indexing="ij")


def _gauss3(mean, S, amp, pts):
    d = pts - mean
    return amp * torch.exp(-0.5 * torch.einsum("...i,ij,...j->...", d, torch.linalg.inv(S), d))


def test_item1_focus_value_is_exact_integral_over_sqrt_2pi_det_Se():
    mean, ls, q, amp = _one_gaussian()
    S = covariance(ls, q)[0]
    sz = 0.9
    H = W = 11
    ps = 1.0
    out = rasterize_slices(mean, ls, q, amp, _identity_cam(), (H, W), (ps, ps), sigma_z=sz,
                           cutoff=60.0, opacity_threshold=0.0)[0]
    a, b = _grid(H, W, ps)
    t = torch.linspace(-12, 12, 4001, dtype=D64)
    pts = torch.stack([a[..., None].expand(H, W, t.numel()), b[..., None].expand(H, W, t.numel()),
                       t.expand(H, W, t.numel())], -1)
    integrand = torch.exp(-t**2 / (2 * sz**2)) * _gauss3(mean[0], S, amp[0], pts)
    exact = torch.trapezoid(integrand, t, dim=-1)
    P_e = torch.linalg.inv(S) + torch.diag(torch.tensor([0, 0, 1 / sz**2], dtype=D64))
    det_Se = 1.0 / torch.linalg.det(P_e)
    torch.testing.assert_close(out, exact / torch.sqrt(2 * math.pi * det_Se), rtol=1e-8, atol=1e-12)
    # and hence not the exact integral itself
    assert not torch.allclose(out, exact, rtol=1e-2)


def test_item2_sigma_inf_is_normalised_line_integral():
    mean, ls, q, amp = _one_gaussian(4)
    S = covariance(ls, q)[0]
    H = W = 11
    out = rasterize_slices(mean, ls, q, amp, _identity_cam(), (H, W), (1.0, 1.0),
                           sigma_z=math.inf, cutoff=60.0, opacity_threshold=0.0)[0]
    a, b = _grid(H, W, 1.0)
    t = torch.linspace(-15, 15, 6001, dtype=D64)
    pts = torch.stack([a[..., None].expand(H, W, t.numel()), b[..., None].expand(H, W, t.numel()),
                       t.expand(H, W, t.numel())], -1)
    line = torch.trapezoid(_gauss3(mean[0], S, amp[0], pts), t, dim=-1)
    expect = line / torch.sqrt(2 * math.pi * torch.linalg.det(S))
    torch.testing.assert_close(out, expect, rtol=1e-8, atol=1e-12)
    big = rasterize_slices(mean, ls, q, amp, _identity_cam(), (H, W), (1.0, 1.0), sigma_z=1e5,
                           cutoff=60.0, opacity_threshold=0.0)[0]
    torch.testing.assert_close(big, out, rtol=1e-8, atol=1e-12)


def test_item3_sigma_to_zero_is_zero_thickness_slice():
    mean, ls, q, amp = _one_gaussian(6)
    S = covariance(ls, q)[0]
    H = W = 11
    sz = 1e-6
    mu2, conic, weight, _ = twin.prepare_slices(mean, ls, q, amp, _identity_cam(), "focus", sz,
                                                60.0, 0.0, (1.0, 1.0))
    out = rasterize_slices(mean, ls, q, amp, _identity_cam(), (H, W), (1.0, 1.0), sigma_z=sz,
                           cutoff=60.0, opacity_threshold=0.0)[0]
    # conditional covariance of (a, b) given n = 0 (Schur complement) and the 2D determinant
    schur = S[:2, :2] - torch.outer(S[:2, 2], S[:2, 2]) / S[2, 2]
    det2 = 1.0 / (conic[0, 0, 0] * conic[0, 0, 2] - conic[0, 0, 1] ** 2)
    torch.testing.assert_close(det2, torch.linalg.det(schur), rtol=1e-6, atol=0)
    a, b = _grid(H, W, 1.0)
    plane = _gauss3(mean[0], S, amp[0], torch.stack([a, b, torch.zeros_like(a)], -1))
    torch.testing.assert_close(out * torch.sqrt(det2), plane, rtol=1e-5, atol=1e-12)


def test_3dgs_mode_definition_and_mask():
    means, ls, q, op = random_gaussians(6, [0, 0, -3], [10, 10, 3], (0.5, 1.5), seed=13)
    cam = _identity_cam()
    sz, cut = 0.8, 3.0
    out = rasterize_slices(means, ls, q, op, cam, (12, 12), (1.0, 1.0), mode="3dgs", sigma_z=sz,
                           cutoff=cut, opacity_threshold=0.0)[0]
    S = covariance(ls, q)
    a, b = _grid(12, 12, 1.0)
    ref = torch.zeros(12, 12, dtype=D64)
    for i in range(6):
        var_n = S[i, 2, 2] + sz**2
        if means[i, 2] ** 2 > cut**2 * var_n:
            continue
        att = torch.exp(-0.5 * means[i, 2] ** 2 / var_n)
        C = torch.linalg.inv(S[i, :2, :2])
        da, db = a - means[i, 0], b - means[i, 1]
        m = C[0, 0] * da * da + 2 * C[0, 1] * da * db + C[1, 1] * db * db
        ref += torch.where(m <= cut**2, op[i] * att * torch.exp(-0.5 * m), torch.zeros_like(m))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    # a Gaussian beyond its extent from the plane is masked out entirely
    far = rasterize_slices(torch.tensor([[5.0, 5.0, 9.0]], dtype=D64), torch.zeros(1, 3, dtype=D64),
                           torch.tensor([[1.0, 0, 0, 0]], dtype=D64), torch.ones(1, dtype=D64), cam,
                           (12, 12), (1.0, 1.0), mode="3dgs", sigma_z=1.0, opacity_threshold=0.0)
    assert far.abs().sum() == 0
    with pytest.raises(ValueError):
        rasterize_slices(means, ls, q, op, cam, (4, 4), (1.0, 1.0), mode="nerf")


def test_opacity_threshold_culls_off_focus_gaussians():
    mean = torch.tensor([[5.0, 5.0, 4.0]], dtype=D64)  # 4 units off the plane, sigma 1
    args = (torch.zeros(1, 3, dtype=D64), torch.tensor([[1.0, 0, 0, 0]], dtype=D64),
            torch.ones(1, dtype=D64), _identity_cam(), (10, 10), (1.0, 1.0))
    on = rasterize_slices(mean, *args, sigma_z=1.0, opacity_threshold=0.0)
    opr = math.exp(-0.5 * 16 / 2)  # mu_z^2 / (S_zz + sigma_z^2)
    assert on.max().item() > 0
    off = rasterize_slices(mean, *args, sigma_z=1.0, opacity_threshold=opr * 1.01)
    assert off.abs().sum() == 0
    kept = rasterize_slices(mean, *args, sigma_z=1.0, opacity_threshold=opr * 0.99)
    torch.testing.assert_close(kept, on)


def test_axial_cameras_stack_matches_voxel_grid():
    spacing, origin = (2.0, 0.5, 0.7), (1.0, -1.0, 2.0)
    cams = axial_cameras(range(5), spacing, origin, dtype=D64)
    assert cams.shape == (5, 3, 4)
    for k in (0, 3):
        for r, c in ((0, 0), (4, 7)):
            p = torch.tensor(origin, dtype=D64) + torch.tensor([k, r, c], dtype=D64) * torch.tensor(spacing, dtype=D64)
            cp = cams[k, :, :3] @ p + cams[k, :, 3]
            torch.testing.assert_close(cp, torch.tensor([r * 0.5, c * 0.7, 0.0], dtype=D64))
    # sigma_z -> 0: the rendered stack times sqrt(det S_2d) is the voxelized volume
    means, ls, q, amps = random_gaussians(1, [2, 1, 2], [6, 3, 5], (0.8, 1.5), seed=17)
    shape = (5, 8, 9)
    vol = voxelize(means, ls, q, amps, shape, spacing, origin, cutoff=50.0)
    stack = rasterize_slices(means, ls, q, amps, cams, shape[1:], spacing[1:], sigma_z=1e-7,
                             cutoff=50.0, opacity_threshold=0.0)
    _, conic, _, _ = twin.prepare_slices(means, ls, q, amps, cams, "focus", 1e-7, 50.0, 0.0,
                                         spacing[1:])
    det2 = 1.0 / (conic[:, 0, 0] * conic[:, 0, 2] - conic[:, 0, 1] ** 2)
    torch.testing.assert_close(stack * det2.sqrt()[:, None, None], vol, rtol=1e-5, atol=1e-12)


def test_rasterize_tiles_chunks_and_image_borders():
    means, ls, q, op = random_gaussians(40, [-4, -4, -3], [40, 37, 3], (0.5, 3.0), seed=19)
    cams = axial_cameras([0.0, 0.5], (1.0, 1.0, 1.0), dtype=D64)
    full = rasterize_slices(means, ls, q, op, cams, (35, 33), (1.1, 1.2), opacity_threshold=0.0)
    mu2, conic, w, radii = twin.prepare_slices(means, ls, q, op, cams, "focus", 1.0, 3.0, 0.0,
                                               (1.1, 1.2))
    chunked = twin.splat_pixels(mu2, conic, w, radii, (35, 33), (1.1, 1.2), 3.0, chunk_evals=300)
    torch.testing.assert_close(chunked, full, rtol=1e-12, atol=1e-12)
    # dense evaluation without tiles
    a, b = _grid(35, 33, 1.0)
    a, b = a * 1.1, b * 1.2
    dense = torch.zeros_like(full)
    for bi in range(2):
        da = a[None] - mu2[bi, :, 0, None, None]
        db = b[None] - mu2[bi, :, 1, None, None]
        c = conic[bi]
        m = (c[:, 0, None, None] * da * da + 2 * c[:, 1, None, None] * da * db
             + c[:, 2, None, None] * db * db).clamp_min(0)
        val = w[bi, :, None, None] * torch.exp(-0.5 * m)
        dense[bi] = torch.where(m <= 9.0, val, torch.zeros_like(val)).sum(0)
    torch.testing.assert_close(full, dense, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- gradients

def test_gradcheck_voxelize():
    means, ls, q, a = random_gaussians(4, [1, 1, 1], [8, 9, 7], (0.7, 1.8), seed=23)
    params = [t.clone().requires_grad_() for t in (means, ls, q, a)]

    def f(m, l, qq, aa):
        return voxelize(m, l, qq, aa, (9, 10, 9), (1.0, 0.9, 1.1), (0.2, 0.0, -0.3), cutoff=3.0)

    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)
    # full Jacobian on a smaller grid
    assert torch.autograd.gradcheck(
        lambda m, l, qq, aa: voxelize(m, l, qq, aa, (4, 5, 4), (2.0, 1.8, 2.2), (0.2, 0.0, -0.3)),
        params, eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("mode", ["focus", "3dgs"])
def test_gradcheck_rasterize(mode):
    means, ls, q, op = random_gaussians(4, [1, 1, -1.5], [9, 9, 1.5], (0.6, 1.6), seed=29)
    cams = random_cameras(2, seed=31)
    cams[:, :, :3] = torch.eye(3, dtype=D64)  # keep the Gaussians near the planes
    cams[1, 2, 3] = 0.4
    params = [t.clone().requires_grad_() for t in (means, ls, q, op)]

    def f(m, l, qq, o):
        return rasterize_slices(m, l, qq, o, cams, (11, 10), (1.0, 1.1), mode=mode, sigma_z=1.2,
                                cutoff=3.0, opacity_threshold=0.0)

    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_focus_gradient_matches_literal_formula_autograd():
    """focus-model.md item 4: every path through mu_e and S_e counts; the closed forms of the
    twin must give the same gradients as autograd through the literal eqs. 6-10."""
    means, ls, q, op = random_gaussians(3, [2, 2, -1], [8, 8, 1], (0.6, 1.5), seed=37)
    cams = random_cameras(2, seed=41)
    g_twin, g_ref = [], []
    for fn, store in ((lambda *p: rasterize_slices(*p, cams, (9, 9), (1.0, 1.0), sigma_z=0.9,
                                                   cutoff=3.0, opacity_threshold=0.0), g_twin),
                      (lambda *p: focus_reference(*p, cams, (9, 9), (1.0, 1.0), 0.9, 3.0), g_ref)):
        params = [t.clone().requires_grad_() for t in (means, ls, q, op)]
        w = torch.linspace(0.5, 1.5, 2 * 81, dtype=D64).reshape(2, 9, 9)
        (fn(*params) * w).sum().backward()
        store.extend(p.grad for p in params)
    for a, b in zip(g_twin, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10)


def test_degenerate_scales_give_no_nan():
    means = torch.tensor([[4.0, 4.0, 4.0], [4.2, 3.0, 5.0], [3.0, 5.0, 4.1], [4.0, 4.0, 4.0]])
    ls = torch.tensor([[-12.0, -12.0, -12.0], [12.0, 0.0, -12.0], [0.0, 0.0, 0.0], [-12.0, 1.0, 1.0]])
    q = torch.tensor([[0.0, 0, 0, 0], [1.0, 1.0, 0, 0], [0.0, 0, 0, 0], [0.3, 0.2, 0.1, 0.9]])
    a = torch.tensor([1.0, 0.5, 0.7, 0.3])
    params = [t.clone().requires_grad_() for t in (means, ls, q, a)]
    V = voxelize(*params, (8, 8, 8))
    assert torch.isfinite(V).all()
    V.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in params)
    cams = axial_cameras([3.0, 4.0, 4.1], (1.0, 1.0, 1.0))
    for mode in ("focus", "3dgs"):
        params = [t.clone().requires_grad_() for t in (means, ls, q, a)]
        I = rasterize_slices(*params, cams, (8, 8), (1.0, 1.0), mode=mode, sigma_z=1.0)
        assert torch.isfinite(I).all()
        I.sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in params), mode


# ----------------------------------------------------------------------------- loader fallback

@pytest.fixture
def fresh_backend(monkeypatch, tmp_path):
    from volbench.gaussian_ops import backend

    backend.reset()
    monkeypatch.delenv("VOLBENCH_GPU_EXT", raising=False)
    monkeypatch.setenv("GPU_EXT_BUILD_DIR", str(tmp_path / "no_build"))
    yield backend
    backend.reset()


def _load_twice(backend):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        first, second = backend.load(), backend.load()
    return first, second, [w for w in rec if issubclass(w.category, RuntimeWarning)]


def test_loader_without_cuda_is_silent_and_ops_still_work(fresh_backend, monkeypatch):
    """Without a CUDA device the CUDA extension is not needed (CPU tensors go to the CPU backend
    or the twin), so loading it neither builds nor warns; reason() still says why."""
    backend = fresh_backend
    monkeypatch.setattr(backend, "_cuda_available", lambda: False)
    monkeypatch.setattr(backend, "_jit_load", lambda: pytest.fail("JIT must not run without CUDA"))
    first, second, warned = _load_twice(backend)
    assert first is None and second is None
    assert warned == []
    assert backend.reason() == "no CUDA device" and not backend.available()
    means, ls, q, a = random_gaussians(2, [0, 0, 0], [4, 4, 4])
    assert voxelize(means, ls, q, a, (4, 4, 4)).abs().sum() > 0


def test_loader_disabled_by_environment(fresh_backend, monkeypatch):
    backend = fresh_backend
    monkeypatch.setenv("VOLBENCH_GPU_EXT", "0")
    monkeypatch.setattr(backend, "_cuda_available", lambda: True)
    monkeypatch.setattr(backend, "_jit_load", lambda: pytest.fail("JIT must not run when disabled"))
    first, _, warned = _load_twice(backend)
    assert first is None and len(warned) == 1
    assert "VOLBENCH_GPU_EXT=0" in backend.reason()


def test_loader_order_installed_built_jit_then_warn_once(fresh_backend, monkeypatch):
    """With CUDA: installed module, else the built one (none here), else JIT; a failed JIT build
    ends in exactly one warning and the twin."""
    backend = fresh_backend
    calls = []
    monkeypatch.setattr(backend, "_cuda_available", lambda: True)
    monkeypatch.setattr(backend, "MODULE_NAME", "volbench_gpu_ext_not_installed_anywhere")

    def failing_jit():
        calls.append("jit")
        raise RuntimeError("nvcc: not found\nmore lines")

    monkeypatch.setattr(backend, "_jit_load", failing_jit)
    first, second, warned = _load_twice(backend)
    assert first is None and second is None
    assert calls == ["jit"], "the JIT build is tried once, not on every call"
    assert len(warned) == 1 and "JIT build failed: nvcc: not found" in str(warned[0].message)
    # a successful JIT build is used and silences the warning
    backend.reset()
    sentinel = object()
    monkeypatch.setattr(backend, "_jit_load", lambda: sentinel)
    first, _, warned = _load_twice(backend)
    assert first is sentinel and not warned and backend.reason() is None


def _built_module_file():
    import glob
    from volbench.gaussian_ops import backend

    libs = sorted(glob.glob(str(backend.CSRC.parent / "build" / "lib" / "volbench_gpu_ext*.so")))
    return libs[0] if libs else None


def test_loader_ignores_stale_built_module(fresh_backend, tmp_path, monkeypatch):
    import os
    import shutil

    backend = fresh_backend
    lib = tmp_path / "build" / "lib"
    lib.mkdir(parents=True)
    so = lib / "volbench_gpu_ext.cpython-311-x86_64-linux-gnu.so"
    so.write_bytes(b"not an ELF file")  # would fail to import if it were tried
    os.utime(so, (0, 0))  # older than every source in gpu_ext/csrc
    monkeypatch.setenv("GPU_EXT_BUILD_DIR", str(tmp_path / "build"))
    assert backend._import_built() is None
    src = _built_module_file()
    if src is None:
        pytest.skip("gpu_ext not built (scripts/build_gpu_ext.sh)")
    shutil.copy(src, so)  # fresh copy: newer than the sources, loads without a GPU
    import sys

    monkeypatch.setitem(sys.modules, backend.MODULE_NAME, None)  # undone after the test
    mod = backend._import_built()
    assert mod is not None
    for name in ("voxelize_forward", "voxelize_backward", "raster_forward", "raster_backward"):
        assert hasattr(mod, name)
    assert mod.VOXEL_TILE == twin.VOXEL_TILE and mod.PIXEL_TILE == twin.PIXEL_TILE


def test_tile_bounds_are_the_rotated_ellipsoid_box():
    """half_ext is the exact axis-aligned half-extent of the rotated cutoff ellipsoid: every
    surface point lies inside it and it is attained (so no rotated Gaussian is truncated and
    the bound is tight)."""
    g = torch.Generator().manual_seed(43)
    ls = torch.log(torch.tensor([[3.0, 0.1, 0.4], [1.0, 1.0, 1.0], [0.2, 2.5, 0.05]], dtype=D64))
    q = torch.randn(3, 4, generator=g, dtype=D64)
    A, half = twin.prepare_3d(torch.zeros(3, 3, dtype=D64), ls, q, 2.5)
    u = torch.randn(20000, 3, generator=g, dtype=D64)
    u = u / u.norm(dim=-1, keepdim=True)
    for i in range(3):
        # surface points x with |A x| = cutoff:  x = inv(A) (cutoff u)
        x = torch.linalg.solve(A[i], (2.5 * u).T).T
        reach = x.abs().amax(0)
        assert (reach <= half[i] * (1 + 1e-12)).all()
        assert (reach >= half[i] * 0.995).all()
    # a rotated needle reaches much farther along the world axes than its small scales say
    assert (half[0] > 2.5 * torch.exp(ls[0]) * 1.5).any()


# ----------------------------------------------------------------------------- fixed arithmetic (decoders)

def test_exp_fixed_accuracy():
    x = torch.cat([torch.linspace(-30.0, 10.0, 40001, dtype=D64), torch.tensor([0.0, -4.5, 1e-300, -1e-20])])
    ref = torch.tensor([math.exp(v) for v in x.tolist()], dtype=D64)
    got = fixed.exp_fixed(x)
    assert ((got - ref) / ref).abs().max().item() < 1e-15
    assert fixed.exp_fixed(torch.tensor([0.0], dtype=D64)).item() == 1.0
    edge = fixed.exp_fixed(torch.tensor([-1e4, 1e4, float("nan")], dtype=D64))
    assert edge[0].item() > 0 and math.isfinite(edge[1].item()) and math.isnan(edge[2].item())


def test_fixed_voxelize_matches_dense_reference():
    shape, spacing, origin = (9, 12, 10), (2.0, 1.0, 0.7), (-1.0, 0.5, 0.25)
    means, ls, q, a = random_gaussians(40, [-1, 0, 0], [17, 12, 7], seed=11)
    ref = dense_voxelize(means, ls, q, a, shape, spacing, origin, 3.0)
    got = voxelize(means, ls, q, a, shape, spacing, origin, cutoff=3.0, deterministic=True)
    assert got.dtype == D64 and ref.abs().max() > 0.5
    # each term is rounded to a multiple of 2^-32 before the integer sum
    assert (got - ref).abs().max().item() <= 40 * 2.0 ** -32
    # float32 parameters give the same function
    g32 = voxelize(means.float(), ls.float(), q.float(), a.float(), shape, spacing, origin, deterministic=True)
    assert (g32 - ref).abs().max().item() < 1e-5


def test_fixed_voxelize_is_bit_identical_whatever_the_layout():
    """ROIs that cut the 8-voxel tiles, single voxels, chunk sizes that divide nothing, the
    Gaussians' order and the thread count leave every voxel's bits unchanged."""
    shape, spacing = (19, 23, 21), (1.5, 1.0, 1.0)
    means, ls, q, a = random_gaussians(300, [0, 0, 0], [27, 23, 21], scale_range=(0.5, 3.0), seed=3)
    a = a * torch.where(torch.arange(300) % 7 == 0, -0.5, 1.0).to(D64)  # negative amplitudes too
    full = voxelize(means, ls, q, a, shape, spacing, deterministic=True)
    A, half = fixed.prepare_fixed(means, fixed.exp_fixed(ls), q, 3.0)
    for chunk in (1 << 19, 4099, 333):
        assert torch.equal(fixed.splat_fixed(means, A, a, half, shape, spacing, chunk_pairs=chunk), full)
    g = torch.Generator().manual_seed(0)
    for _ in range(12):
        lo = [int(torch.randint(0, s, (1,), generator=g)) for s in shape]
        hi = [int(torch.randint(l + 1, s + 1, (1,), generator=g)) for l, s in zip(lo, shape)]
        roi = (lo[0], hi[0], lo[1], hi[1], lo[2], hi[2])
        part = voxelize(means, ls, q, a, shape, spacing, roi=roi, deterministic=True)
        assert torch.equal(part, full[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]), roi
    for k in range(0, full.numel(), 97):  # one voxel at a time: tiny tensors, scalar code paths
        z, r = divmod(k, shape[1] * shape[2])
        y, x = divmod(r, shape[2])
        one = voxelize(means, ls, q, a, shape, spacing, roi=(z, z + 1, y, y + 1, x, x + 1), deterministic=True)
        assert torch.equal(one.reshape(()), full[z, y, x])
    perm = torch.randperm(300, generator=g)
    assert torch.equal(voxelize(means[perm], ls[perm], q[perm], a[perm], shape, spacing, deterministic=True), full)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(voxelize(means, ls, q, a, shape, spacing, deterministic=True), full)
    finally:
        torch.set_num_threads(old)


def test_fixed_voxelize_bad_values_are_contained():
    means, ls, q, a = random_gaussians(6, [0, 0, 0], [8, 8, 8], seed=2)
    clean = voxelize(means, ls, q, a, (8, 8, 8), deterministic=True)
    means = means.clone()
    means[0] = float("nan")  # culled
    a = a.clone()
    a[1] = float("nan")  # contributes nothing
    a[2] = 1e300  # clamped, cannot overflow the integer sum into other voxels' values
    out = voxelize(means, ls, q, a, (8, 8, 8), deterministic=True)
    assert torch.isfinite(out).all()
    keep = torch.arange(6) >= 3
    rest = voxelize(means[keep], ls[keep], q[keep], a[keep], (8, 8, 8), deterministic=True)
    g2 = voxelize(means[2:3], ls[2:3], q[2:3], torch.full((1,), 1e300, dtype=D64), (8, 8, 8), deterministic=True)
    assert torch.equal(out, rest + g2)
    assert clean.abs().max() < 10
    with pytest.raises(ValueError):
        voxelize(means, ls, q, a, (8, 8, 8), roi=(0, 9, 0, 8, 0, 8), deterministic=True)
