"""Parity of the CUDA kernels (volbench_gpu_ext) with the PyTorch twin.  Skipped without CUDA.

The twin runs in float64 on the CPU (the reference), the kernels in float32 on the GPU.
Forward: |cuda - ref| <= 1e-4 |ref| + 1e-5 max|ref| on every element, except that a voxel/pixel
sitting on a cutoff boundary may flip in float32: at most 0.1 % of the elements may differ, each
by no more than the value a term has at the cutoff (amp * exp(-cutoff^2 / 2)) per flip.
Gradients: relative error (Frobenius norm) within 1e-3 for every parameter tensor.  The cases
(gpu_ext_cases.py) are shared with the CPU-emulated kernel tests (test_gpu_ext_emulated.py);
"crowded" puts more Gaussians in one tile than one shared-memory batch holds.
"""

from __future__ import annotations

import math

import pytest
import torch

from gpu_ext_harness import composite_ref as cref
from gpu_ext_cases import (D64, RASTER_CASES, RASTER_PIXEL_SIZE, VOX_CASES, VOX_SPACING,
                           assert_forward, assert_grads, cameras, gaussians)
from volbench.gaussian_ops import backend, ops
from volbench.gaussian_ops import torch_impl as twin

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


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


# ----------------------------------------------------------------------------- voxelizer

@pytest.mark.parametrize("case", sorted(VOX_CASES))
def test_voxelize_parity(case):
    params, shape, roi, origin = VOX_CASES[case]
    spacing = VOX_SPACING

    def fn(m, l, q, a, device, dtype):
        return ops.voxelize(m, l, q, a, shape, spacing, origin, cutoff=3.0, roi=roi)

    (oc, gc), (orf, gr) = run_both(fn, params)
    assert oc.shape == orf.shape
    assert_forward(oc, orf, params[3].max().item(), 3.0)
    assert_grads(gc, gr, ("means", "log_scales", "quats", "amps"))


def test_crowded_cases_fill_two_batches(extension):
    """The "crowded" cases reach the multi-batch path: > 512 Gaussians in a voxel tile, > 256
    (camera, Gaussian) items in a pixel tile."""
    params, shape, roi, origin = VOX_CASES["crowded"]
    m, ls, q, a = (p.float().cuda() for p in params)
    A, half = twin.prepare_3d(m, ls, q, 3.0)
    _, _, ranges = extension.voxelize_forward(m, A.reshape(-1, 9).contiguous(), a, half,
                                              list(origin), list(VOX_SPACING), list(shape), 3.0)
    assert (ranges[1::2] - ranges[0::2]).max().item() > 512
    params, image_shape = RASTER_CASES["crowded"]
    m, ls, q, a = (p.float().cuda() for p in params)
    cams = cameras("axial", torch.float32).cuda()
    mu2, conic, w, radii = twin.prepare_slices(m, ls, q, a, cams, "focus", 1.5, 3.0, 1e-4,
                                               RASTER_PIXEL_SIZE)
    B, N = w.shape
    _, _, ranges = extension.raster_forward(mu2.reshape(-1, 2).contiguous(),
                                            conic.reshape(-1, 3).contiguous(),
                                            w.reshape(-1).contiguous(),
                                            radii.reshape(-1, 2).contiguous(), B, N,
                                            *image_shape, list(RASTER_PIXEL_SIZE), 3.0)
    assert (ranges[1::2] - ranges[0::2]).max().item() > 256


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

@pytest.mark.parametrize("mode", ["focus", "3dgs"])
@pytest.mark.parametrize("cam_kind", ["axial", "rotated"])
@pytest.mark.parametrize("case", sorted(RASTER_CASES))
def test_rasterize_parity(case, cam_kind, mode):
    params, image_shape = RASTER_CASES[case]
    ps = RASTER_PIXEL_SIZE

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
        return ops.rasterize_slices(m, l, q, o, cams, image_shape, RASTER_PIXEL_SIZE, mode="focus",
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


# ----------------------------------------------------------------------------- compositing

@pytest.fixture(scope="module")
def extension():
    """The loaded volbench_gpu_ext (also used by test_crowded_cases_fill_two_batches)."""
    ext = backend.load()
    if ext is None:
        pytest.skip("volbench_gpu_ext is not available")
    return ext


@pytest.fixture(scope="module")
def comp_ext(extension):
    if not hasattr(extension, "composite_fwd"):
        pytest.fail("volbench_gpu_ext has no composite_fwd / composite_bwd: a stale build?")
    return extension


def _comp_cuda(case, additive):
    cu = {k: case[k].cuda() for k in ("m2", "conic", "wpeak", "order", "values")}
    return (cu["m2"], cu["conic"], cu["wpeak"], cu["order"], cu["values"], case["H"], case["W"],
            *case["ps"], case["cutoff"], additive)


@pytest.mark.parametrize("additive", [False, True], ids=["composite", "additive"])
@pytest.mark.parametrize("name", cref.CASES)
def test_composite_parity(comp_ext, name, additive):
    """composite_fwd / composite_bwd on the GPU against the dense float64 reference of the
    contract (tests/gpu_ext_harness/composite_ref.py, the cases of the emulated tests).  Looser
    than the emulated tests: __expf and nvcc's contractions elsewhere than comp_maha /
    comp_weight; a pixel on a cutoff or clamp boundary may still flip."""
    case = cref.make_case(name)
    args = _comp_cuda(case, additive)
    out, alpha, *saved = comp_ext.composite_fwd(*args)
    assert out.is_cuda and out.dtype == torch.float32 and len(saved) == 4
    go, ga = cref.upstream(case, seed=len(name) + int(additive))
    grads = comp_ext.composite_bwd(*args, saved, go.cuda(), ga.cuda())
    ref_out, ref_alpha, ref_grads = cref.reference(case, additive, go, ga)
    ref_grads = [torch.nan_to_num(g) for g in ref_grads]
    cref.assert_close_forward(out.cpu(), ref_out, 1e-4, 2e-5, "out")
    cref.assert_close_forward(alpha.cpu(), ref_alpha, 1e-4, 2e-5, "alpha")
    cref.assert_grads([g.cpu() for g in grads], ref_grads, rtol=1e-3, row_rtol=1e-2)


def test_composite_backward_repeats(comp_ext):
    """Two backward runs agree to float32 atomics reordering; the forward is bit-identical."""
    case = cref.make_case("crowded")
    args = _comp_cuda(case, False)
    a = comp_ext.composite_fwd(*args)
    b = comp_ext.composite_fwd(*args)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    go, ga = (t.cuda() for t in cref.upstream(case, seed=3))
    g1 = comp_ext.composite_bwd(*args, a[2:], go, ga)
    g2 = comp_ext.composite_bwd(*args, a[2:], go, ga)
    for x, y in zip(g1, g2):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6 * max(y.abs().max().item(), 1e-30))


def test_composite_binding_checks(comp_ext):
    case = cref.make_case("no_values")
    args = list(_comp_cuda(case, False))
    bad = args[3].clone()
    bad[0, 0] = bad.shape[1]
    with pytest.raises(RuntimeError, match="outside"):
        comp_ext.composite_fwd(*args[:3], bad, *args[4:])
    with pytest.raises(RuntimeError, match="int64"):
        comp_ext.composite_fwd(*args[:3], args[3].int(), *args[4:])
    with pytest.raises(RuntimeError, match="float32"):
        comp_ext.composite_fwd(args[0].double(), *args[1:])
    with pytest.raises(RuntimeError, match="contiguous"):
        comp_ext.composite_fwd(args[0].transpose(0, 1).contiguous().transpose(0, 1), *args[1:])
    with pytest.raises(RuntimeError, match="CUDA"):
        comp_ext.composite_fwd(args[0].cpu(), *args[1:])
    with pytest.raises(RuntimeError, match="shape"):
        comp_ext.composite_fwd(args[0], args[1][:, :, :2].contiguous(), *args[2:])
