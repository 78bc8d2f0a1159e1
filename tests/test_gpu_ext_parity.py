"""Parity of the CUDA kernels (volbench_gpu_ext) with the PyTorch twin.  Skipped without CUDA.

The twin runs in float64 on the CPU (the reference), the kernels in float32 on the GPU.
Forward: |cuda - ref| <= 1e-4 |ref| + 1e-5 max|ref| on every element, except that a voxel/pixel
sitting on a cutoff boundary may flip in float32: at most 0.1 % of the elements may differ, each
by no more than the value a term has at the cutoff (amp * exp(-cutoff^2 / 2)) per flip.
Gradients: relative error (Frobenius norm) within 1e-3 for every parameter tensor.
"""

from __future__ import annotations

import math

import pytest
import torch

from volbench.gaussian_ops import backend, ops
from volbench.gaussian_ops import torch_impl as twin

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

D64 = torch.float64


@pytest.fixture(scope="module", autouse=True)
def extension():
    mod = backend.load()
    assert mod is not None, f"CUDA present but volbench_gpu_ext unavailable: {backend.reason()}"
    return mod


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


def run_both(fn, params, weight_seed=0):
    """fn(*params) on CUDA float32 and on the CPU float64 twin; returns outputs and grads."""
    res = []
    for device, dtype in (("cuda", torch.float32), ("cpu", D64)):
        ps = [p.to(device=device, dtype=dtype).clone().requires_grad_() for p in params]
        out = fn(*ps, device=device, dtype=dtype)
        g = torch.Generator().manual_seed(weight_seed)
        w = torch.rand(out.shape, generator=g, dtype=D64).to(device=device, dtype=dtype)
        (out * w).sum().backward()
        res.append((out.detach().double().cpu(), [p.grad.double().cpu() for p in ps]))
    if res[0][0].numel():
        assert ops.uses_cuda(torch.zeros(1, device="cuda"))
    return res


def assert_forward(cuda, ref, amp_max, cutoff):
    scale = ref.abs().max().item() if ref.numel() else 0.0
    err = (cuda - ref).abs()
    tol = 1e-4 * ref.abs() + 1e-5 * scale + 1e-30
    bad = err > tol
    n_bad = int(bad.sum())
    assert n_bad <= max(1, int(1e-3 * ref.numel())), f"{n_bad} elements off (max err {err.max():.3g})"
    if n_bad:
        flip = amp_max * math.exp(-cutoff**2 / 2)
        assert err[bad].max() <= 2 * flip, f"max err {err[bad].max():.3g} beyond a cutoff flip"
    assert torch.isfinite(cuda).all()


def assert_grads(g_cuda, g_ref, names=("means", "log_scales", "quats", "amps")):
    for name, a, b in zip(names, g_cuda, g_ref):
        assert torch.isfinite(a).all(), name
        nb = b.norm().item()
        if nb == 0:
            assert a.norm().item() <= 1e-6, name
            continue
        rel = (a - b).norm().item() / nb
        assert rel <= 1e-3, f"gradient to {name}: relative error {rel:.3g}"


# ----------------------------------------------------------------------------- voxelizer

VOX_CASES = {
    "one": (gaussians(1, [5, 6, 7], [5.1, 6.1, 7.1], seed=1), (12, 13, 14), None),
    "straddling": (gaussians(60, [0, 0, 0], [20, 24, 28], seed=2), (20, 24, 28), None),
    "needles": (cat(gaussians(10, [0, 0, 0], [16, 16, 16], seed=3),
                    needles([[7.9, 8.0, 8.1], [3.5, 12.2, 15.9], [12.0, 4.0, 7.99]])),
                (17, 16, 18), None),
    # Gaussians in one corner: most tiles empty
    "empty_tiles": (gaussians(15, [0, 0, 0], [5, 5, 5], seed=4), (30, 33, 35), None),
    "roi": (gaussians(80, [0, 0, 0], [30, 30, 30], seed=5), (30, 30, 30), (7, 19, 3, 30, 0, 17)),
    "larger": (gaussians(1500, [0, 0, 0], [40, 64, 64], (0.5, 2.5), seed=6), (40, 64, 64), None),
}


@pytest.mark.parametrize("case", sorted(VOX_CASES))
def test_voxelize_parity(case):
    params, shape, roi = VOX_CASES[case]
    spacing, origin = (1.2, 1.0, 0.9), (-0.5, 0.25, 0.0)

    def fn(m, l, q, a, device, dtype):
        return ops.voxelize(m, l, q, a, shape, spacing, origin, cutoff=3.0, roi=roi)

    (oc, gc), (orf, gr) = run_both(fn, params)
    assert oc.shape == orf.shape
    assert_forward(oc, orf, params[3].max().item(), 3.0)
    assert_grads(gc, gr)


def test_voxelize_float32_cuda_output_dtype_and_slabs():
    params = [p.float().cuda() for p in gaussians(40, [0, 0, 0], [24, 20, 20], seed=8)]
    full = ops.voxelize(*params, (24, 20, 20))
    assert full.dtype == torch.float32 and full.is_cuda
    slabs = torch.cat([ops.voxelize(*params, (24, 20, 20), roi=(z, z + 8, 0, 20, 0, 20))
                       for z in range(0, 24, 8)])
    torch.testing.assert_close(slabs, full, rtol=1e-6, atol=1e-6)


def test_voxelize_no_nan_for_degenerate_scales():
    means = torch.tensor([[4.0, 4.0, 4.0], [4.2, 3.0, 5.0], [3.0, 5.0, 4.1], [4.0, 4.0, 4.0]])
    ls = torch.tensor([[-12.0, -12.0, -12.0], [12.0, 0.0, -12.0], [0.0, 0.0, 0.0], [-12.0, 1.0, 1.0]])
    q = torch.tensor([[0.0, 0, 0, 0], [1.0, 1.0, 0, 0], [0.0, 0, 0, 0], [0.3, 0.2, 0.1, 0.9]])
    a = torch.tensor([1.0, 0.5, 0.7, 0.3])
    ps = [t.cuda().requires_grad_() for t in (means, ls, q, a)]
    V = ops.voxelize(*ps, (8, 8, 8))
    assert torch.isfinite(V).all()
    V.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in ps)
    empty = ops.voxelize(*[t[:0].cuda() for t in (means, ls, q, a)], (8, 8, 8))
    assert empty.abs().sum().item() == 0


# ----------------------------------------------------------------------------- rasterizer

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


RASTER_CASES = {
    "one": (gaussians(1, [5, 8, 9], [5.1, 8.1, 9.1], seed=11), (20, 23)),
    "straddling": (gaussians(150, [0, 0, 0], [20, 40, 37], seed=12), (40, 37)),
    "needles": (cat(gaussians(20, [0, 0, 0], [12, 20, 20], seed=13),
                    needles([[3.5, 15.9, 16.1], [7.0, 8.0, 31.9], [0.2, 16.0, 16.0]], seed=14)),
                (33, 35)),
    "empty_tiles": (gaussians(20, [0, 0, 0], [12, 6, 6], seed=15), (50, 64)),
    "larger": (gaussians(3000, [0, 0, 0], [14, 96, 80], (0.4, 2.0), seed=16), (96, 80)),
}


@pytest.mark.parametrize("mode", ["focus", "3dgs"])
@pytest.mark.parametrize("cam_kind", ["axial", "rotated"])
@pytest.mark.parametrize("case", sorted(RASTER_CASES))
def test_rasterize_parity(case, cam_kind, mode):
    params, image_shape = RASTER_CASES[case]
    ps = (1.0, 0.9)

    def fn(m, l, q, o, device, dtype):
        cams = cameras(cam_kind, dtype).to(device)
        return ops.rasterize_slices(m, l, q, o, cams, image_shape, ps, mode=mode, sigma_z=1.5,
                                    cutoff=3.0, opacity_threshold=1e-4)

    (oc, gc), (orf, gr) = run_both(fn, params)
    # the largest single-term value on these images (focus values are normalised by sqrt(det))
    assert_forward(oc, orf, max(orf.abs().max().item(), params[3].max().item()), 3.0)
    assert_grads(gc, gr, ("means", "log_scales", "quats", "opacities"))


def test_rasterize_no_nan_for_degenerate_scales():
    means = torch.tensor([[4.0, 4.0, 4.0], [4.2, 3.0, 5.0], [3.0, 5.0, 4.1], [4.0, 4.0, 4.0]])
    ls = torch.tensor([[-12.0, -12.0, -12.0], [12.0, 0.0, -12.0], [0.0, 0.0, 0.0], [-12.0, 1.0, 1.0]])
    q = torch.tensor([[0.0, 0, 0, 0], [1.0, 1.0, 0, 0], [0.0, 0, 0, 0], [0.3, 0.2, 0.1, 0.9]])
    a = torch.tensor([1.0, 0.5, 0.7, 0.3])
    cams = ops.axial_cameras([3.0, 4.0, 4.1], (1.0, 1.0, 1.0), device="cuda")
    for mode in ("focus", "3dgs"):
        ps = [t.cuda().requires_grad_() for t in (means, ls, q, a)]
        img = ops.rasterize_slices(*ps, cams, (8, 8), (1.0, 1.0), mode=mode)
        assert torch.isfinite(img).all()
        img.sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in ps), mode


def test_rasterize_camera_chunking(monkeypatch):
    params = [p.float().cuda() for p in gaussians(50, [0, 0, 0], [10, 30, 30], seed=21)]
    cams = ops.axial_cameras(range(10), (1.0, 1.0, 1.0), device="cuda")
    whole = ops.rasterize_slices(*params, cams, (30, 30), (1.0, 1.0))
    monkeypatch.setattr(ops, "_MAX_PAIRS", 120)  # 2 cameras per launch
    parts = ops.rasterize_slices(*params, cams, (30, 30), (1.0, 1.0))
    torch.testing.assert_close(parts, whole, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sigma_z", [math.inf, 1e-3])
@pytest.mark.parametrize("cam_kind", ["axial", "rotated"])
@pytest.mark.parametrize("case", ["needles", "straddling"])
def test_rasterize_parity_sigma_limits(case, cam_kind, sigma_z):
    """The focus model's limits on the kernels: all-in-focus (sigma_z = inf) and the
    zero-thickness slice (sigma_z -> 0)."""
    params, image_shape = RASTER_CASES[case]

    def fn(m, l, q, o, device, dtype):
        cams = cameras(cam_kind, dtype).to(device)
        return ops.rasterize_slices(m, l, q, o, cams, image_shape, (1.0, 0.9), mode="focus",
                                    sigma_z=sigma_z, cutoff=3.0, opacity_threshold=1e-4)

    (oc, gc), (orf, gr) = run_both(fn, params)
    assert orf.abs().max() > 0.1
    assert_forward(oc, orf, max(orf.abs().max().item(), params[3].max().item()), 3.0)
    assert_grads(gc, gr, ("means", "log_scales", "quats", "opacities"))


def test_cuda_limits_between_operators():
    """On the GPU: sigma_z = 1e5 renders the all-in-focus image (sigma_z = inf), and with
    sigma_z -> 0 the axial stack times sqrt(det S_2d) is the voxelized volume."""
    means, ls, q, a = [t.float().cuda() for t in gaussians(1, [2, 3, 3], [3, 5, 6], (0.8, 1.5),
                                                             seed=17)]
    cams = ops.axial_cameras(range(6), (1.0, 1.0, 1.0), device="cuda")
    inf = ops.rasterize_slices(means, ls, q, a, cams, (9, 10), (1.0, 1.0), sigma_z=math.inf,
                               cutoff=8.0, opacity_threshold=0.0)
    big = ops.rasterize_slices(means, ls, q, a, cams, (9, 10), (1.0, 1.0), sigma_z=1e5,
                               cutoff=8.0, opacity_threshold=0.0)
    torch.testing.assert_close(big, inf, rtol=1e-4, atol=1e-6)
    sz = 1e-3
    stack = ops.rasterize_slices(means, ls, q, a, cams, (9, 10), (1.0, 1.0), sigma_z=sz,
                                 cutoff=8.0, opacity_threshold=0.0)
    _, conic, _, _ = twin.prepare_slices(means, ls, q, a, cams, "focus", sz, 8.0, 0.0, (1.0, 1.0))
    det2 = 1.0 / (conic[:, 0, 0] * conic[:, 0, 2] - conic[:, 0, 1] ** 2)
    vol = ops.voxelize(means, ls, q, a, (6, 9, 10), cutoff=8.0)
    assert vol.max() > 0.1
    torch.testing.assert_close(stack * det2.sqrt()[:, None, None], vol, rtol=2e-3, atol=1e-5)
