"""The compiled CPU backend of the Gaussian operators (gpu_ext/cpu, volbench_cpu_ext): parity with
the float64 PyTorch twin on the cases of the CUDA parity tests (tests/gpu_ext_cases.py), forward
and gradients, in float32 and float64; gradcheck in float64 through ops; determinism (bit-identical
whatever the ROI, the camera chunking or the thread count, gradients too); the dispatch rule and
VOLBENCH_GAUSSIAN_BACKEND=twin."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from gpu_ext_cases import (D64, RASTER_CASES, RASTER_PIXEL_SIZE, VOX_CASES, VOX_SPACING,
                           assert_forward, assert_grads, cameras, gaussians)
from volbench.gaussian_ops import backend, ops
from volbench.gaussian_ops import torch_impl as twin

CUTOFF = 3.0
F32 = torch.float32


@pytest.fixture(scope="module")
def ext():
    mod = backend.load_cpu()
    assert mod is not None, f"CPU backend did not build: {backend.cpu_reason()}"
    return mod


@pytest.fixture
def threads():
    """Restores torch's thread count after a test that changes it."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def upstream(shape, seed, dtype=F32):
    g = torch.Generator().manual_seed(seed)
    go = torch.rand(shape, generator=g, dtype=D64)
    go = torch.where(torch.rand(shape, generator=g, dtype=D64) < 0.1, torch.zeros_like(go), go)
    return go.to(dtype)


# ----------------------------------------------------------------------------- voxelizer

def vox_run(case, dtype):
    """(out, grads (means, A, amps)) of the CPU backend and of the float64 twin, both on the
    same inputs rounded to ``dtype``."""
    params, shape, roi, origin = VOX_CASES[case]
    means, ls, q, amps = params
    A, half = twin.prepare_3d(means, ls, q, CUTOFF)
    means, A, amps, half = (t.to(dtype).detach() for t in (means, A, amps, half))
    z0, _, y0, _, x0, _ = twin.roi_box(shape, roi)
    roi_origin, sp, roi_shape = twin._roi_geometry(shape, VOX_SPACING, origin, roi)
    ins = [t.clone().requires_grad_() for t in (means, A, amps)]
    geom = ([float(o) for o in origin], [float(v) for v in VOX_SPACING], [z0, y0, x0],
            [int(v) for v in roi_shape], float(CUTOFF))
    out = ops._VoxelSplat.apply(ins[0], ins[1], ins[2], half, geom, True)
    go = upstream(out.shape, seed=len(case), dtype=dtype)
    out.backward(go)
    refs = [t.double().clone().requires_grad_() for t in (means, A, amps)]
    ref = twin.splat_voxels(refs[0], refs[1], refs[2], half.double(), roi_origin, sp, roi_shape,
                            CUTOFF)
    ref.backward(go.double())
    return (out.detach(), [t.grad for t in ins]), (ref.detach(), [t.grad for t in refs]), amps


@pytest.mark.parametrize("case", sorted(VOX_CASES))
def test_voxelizer_parity_float32(ext, case):
    (out, grads), (ref, ref_grads), amps = vox_run(case, F32)
    assert out.dtype == F32 and out.shape == ref.shape
    assert ref.abs().max() > 0.1
    assert_forward(out.double(), ref, amps.max().item(), CUTOFF)
    assert_grads([g.double() for g in grads], ref_grads, ("means", "A", "amps"))


@pytest.mark.parametrize("case", ["straddling", "roi", "crowded", "far_origin", "nan_means"])
def test_voxelizer_parity_float64(ext, case):
    (out, grads), (ref, ref_grads), amps = vox_run(case, D64)
    assert out.dtype == D64
    assert_forward(out, ref, amps.max().item(), CUTOFF, rtol=1e-9, atol_rel=1e-11)
    assert_grads(grads, ref_grads, ("means", "A", "amps"), rtol=1e-8)


def test_voxelizer_crowded_tile_exceeds_a_cuda_batch():
    params, shape, _, origin = VOX_CASES["crowded"]
    # every Gaussian of the case touches voxel tile (0, 0, 0): more than one 512-Gaussian batch
    assert params[0].shape[0] > 512 and (params[0] < 8 * torch.tensor(VOX_SPACING)).all()


def test_voxelize_gradcheck_float64(ext):
    p = gaussians(4, [2, 2, 2], [7, 7, 7], (0.8, 1.6), seed=31)
    p = [t.clone().requires_grad_() for t in p]
    assert ops.uses_cpu_ext(*p)

    def f(m, ls, q, a):
        return ops.voxelize(m, ls, q, a, (9, 10, 11), (1.0, 0.9, 1.1), (0.2, -0.1, 0.0),
                            cutoff=6.0)
    assert torch.autograd.gradcheck(f, p, eps=1e-6, atol=1e-7, rtol=1e-5)


# ----------------------------------------------------------------------------- rasterizer

RASTER_PARAMS = [(case, cam, mode, 1.5) for case in sorted(RASTER_CASES)
                 for cam in ("axial", "rotated") for mode in ("focus", "3dgs")]
RASTER_PARAMS += [(case, "rotated", "focus", sz) for case in ("needles", "straddling")
                  for sz in (math.inf, 1e-3)]


def raster_run(case, cam, mode, sigma_z, dtype):
    params, (H, W) = RASTER_CASES[case]
    means, ls, q, op = params
    mu2, conic, weight, radii = twin.prepare_slices(means, ls, q, op, cameras(cam), mode, sigma_z,
                                                    CUTOFF, 1e-4, RASTER_PIXEL_SIZE)
    mu2, conic, weight, radii = (t.to(dtype).detach() for t in (mu2, conic, weight, radii))
    ins = [t.clone().requires_grad_() for t in (mu2, conic, weight)]
    out = ops._PixelSplat.apply(ins[0], ins[1], ins[2], radii, (H, W), RASTER_PIXEL_SIZE,
                                CUTOFF, True)
    go = upstream(out.shape, seed=H + W, dtype=dtype)
    out.backward(go)
    refs = [t.double().clone().requires_grad_() for t in (mu2, conic, weight)]
    ref = twin.splat_pixels(refs[0], refs[1], refs[2], radii.double(), (H, W), RASTER_PIXEL_SIZE,
                            CUTOFF)
    ref.backward(go.double())
    return (out.detach(), [t.grad for t in ins]), (ref.detach(), [t.grad for t in refs]), weight


@pytest.mark.parametrize("case,cam,mode,sigma_z", RASTER_PARAMS)
def test_rasterizer_parity_float32(ext, case, cam, mode, sigma_z):
    (out, grads), (ref, ref_grads), weight = raster_run(case, cam, mode, sigma_z, F32)
    assert out.shape == ref.shape
    if ref.abs().max() == 0:
        assert out.abs().max() == 0
    else:
        assert_forward(out.double(), ref, weight.max().item(), CUTOFF)
    assert_grads([g.double() for g in grads], ref_grads, ("mean2d", "conic", "weight"))


@pytest.mark.parametrize("case", ["crowded", "needles", "larger"])
def test_rasterizer_parity_float64(ext, case):
    (out, grads), (ref, ref_grads), weight = raster_run(case, "rotated", "focus", 1.5, D64)
    assert_forward(out, ref, weight.max().item(), CUTOFF, rtol=1e-9, atol_rel=1e-11)
    assert_grads(grads, ref_grads, ("mean2d", "conic", "weight"), rtol=1e-8)


def test_rasterizer_crowded_tile_exceeds_a_cuda_batch():
    params, (H, W) = RASTER_CASES["crowded"]
    _, _, _, radii = twin.prepare_slices(*params, cameras("axial"), "focus", 1.5, CUTOFF, 1e-4,
                                         RASTER_PIXEL_SIZE)
    # items reaching the first 16x16 tile of the axial cameras
    mu2 = twin.prepare_slices(*params, cameras("axial"), "focus", 1.5, CUTOFF, 1e-4,
                              RASTER_PIXEL_SIZE)[0]
    c = mu2 / torch.tensor(RASTER_PIXEL_SIZE, dtype=D64)
    lo = torch.floor(c - radii)
    hits = ((radii >= 0).all(-1) & (lo < 16).all(-1)).sum()
    assert hits > 256


@pytest.mark.parametrize("mode", ["focus", "3dgs"])
def test_rasterize_gradcheck_float64(ext, mode):
    p = gaussians(3, [1, 3, 3], [3, 8, 8], (0.8, 1.6), seed=33)
    p = [t.clone().requires_grad_() for t in p]
    cams = ops.axial_cameras([1.0, 2.5], (1.0, 1.0, 1.0), dtype=D64)

    def f(m, ls, q, o):
        return ops.rasterize_slices(m, ls, q, o, cams, (11, 12), (1.0, 0.9), mode=mode,
                                    sigma_z=1.2, cutoff=6.0)
    assert torch.autograd.gradcheck(f, p, eps=1e-6, atol=1e-7, rtol=1e-5)


# ----------------------------------------------------------------------------- determinism

def _vox_params(n=400, seed=41):
    return [t.float() for t in gaussians(n, [0, 0, 0], [30, 40, 36], (0.6, 2.2), seed=seed)]


@pytest.mark.parametrize("dtype", [F32, D64])
def test_voxelize_bit_identical_whatever_roi(ext, dtype):
    p = [t.to(dtype) for t in _vox_params()]
    shape, sp, org = (29, 41, 37), (1.1, 0.9, 1.0), (-0.3, 0.2, 5.0)
    full = ops.voxelize(*p, shape, sp, org)
    # z-slabs of sizes that do not align with the 8^3 tiles, and an arbitrary box
    for z0, z1 in [(0, 5), (5, 17), (17, 29)]:
        slab = ops.voxelize(*p, shape, sp, org, roi=(z0, z1, 0, 41, 0, 37))
        assert torch.equal(slab, full[z0:z1]), (z0, z1)
    box = ops.voxelize(*p, shape, sp, org, roi=(3, 22, 7, 30, 11, 36))
    assert torch.equal(box, full[3:22, 7:30, 11:36])


@pytest.mark.parametrize("dtype", [F32, D64])
def test_voxelize_bit_identical_whatever_thread_count(ext, threads, dtype):
    results = []
    for n in (1, 2, 3):
        torch.set_num_threads(n)
        p = [t.to(dtype).clone().requires_grad_() for t in _vox_params(1500)]
        out = ops.voxelize(*p, (32, 48, 40), (1.0, 1.0, 1.0))
        out.backward(upstream(out.shape, 3, dtype))
        results.append([out.detach()] + [t.grad for t in p])
    for r in results[1:]:
        for a, b in zip(results[0], r):
            assert torch.equal(a, b)


def _raster_setup(dtype):
    p = [t.to(dtype) for t in gaussians(800, [0, 0, 0], [10, 60, 50], (0.4, 2.0), seed=43)]
    cams = ops.axial_cameras([0.5 * k for k in range(12)], (1.0, 1.0, 1.0), dtype=dtype)
    return p, cams


@pytest.mark.parametrize("dtype", [F32, D64])
def test_rasterize_bit_identical_whatever_chunking_and_threads(ext, threads, monkeypatch, dtype):
    """Images: bit-identical whatever the thread count and the camera chunking of ops (the
    gradients through the torch prelude sum over cameras in torch, chunk by chunk, so only the
    kernels' own gradients are compared below)."""
    outs = []
    for n, max_pairs in ((2, 1 << 24), (1, 1 << 24), (2, 3000), (3, 1)):
        torch.set_num_threads(n)
        monkeypatch.setattr(ops, "_MAX_PAIRS", max_pairs)  # cameras per prelude chunk
        p, cams = _raster_setup(dtype)
        outs.append(ops.rasterize_slices(*p, cams, (60, 50), (1.0, 1.0), mode="focus",
                                         sigma_z=1.0))
    for o in outs[1:]:
        assert torch.equal(outs[0], o)
    p, cams = _raster_setup(dtype)
    one = ops.rasterize_slices(*p, cams[5:6], (60, 50), (1.0, 1.0), mode="focus", sigma_z=1.0)
    assert torch.equal(one[0], outs[0][5])


@pytest.mark.parametrize("dtype", [F32, D64])
def test_raster_gradients_bit_identical_whatever_thread_count(ext, threads, dtype):
    p, cams = _raster_setup(dtype)
    fp = twin.prepare_slices(*p, cams, "focus", 1.0, CUTOFF, 1e-4, (1.0, 1.0))
    results = []
    for n in (1, 2, 3):
        torch.set_num_threads(n)
        ins = [t.detach().clone().requires_grad_() for t in fp[:3]]
        out = ops._PixelSplat.apply(*ins, fp[3], (60, 50), (1.0, 1.0), CUTOFF, True)
        out.backward(upstream(out.shape, 5, dtype))
        results.append([out.detach()] + [t.grad for t in ins])
    for r in results[1:]:
        for a, b in zip(results[0], r):
            assert torch.equal(a, b)


# ----------------------------------------------------------------------------- dispatch

def test_dispatch_cpu_tensors_use_the_cpu_backend(ext, monkeypatch):
    monkeypatch.delenv(backend.BACKEND_ENV, raising=False)
    assert ops.backend_name("cpu") == "cpu"
    assert ops.backend_name("cpu", torch.float64) == "cpu"
    assert ops.backend_name("cpu", torch.float16) == "twin"
    p = _vox_params(30)
    p[0].requires_grad_()
    out = ops.voxelize(*p, (10, 11, 12))
    assert out.grad_fn is not None and getattr(out.grad_fn, "cpu", None) is True  # _VoxelSplat on the CPU backend


def test_env_forces_the_twin_with_one_warning(ext, monkeypatch):
    monkeypatch.setenv(backend.BACKEND_ENV, "twin")
    monkeypatch.setitem(backend._cpu_state, "forced_warned", False)
    p = _vox_params(30)
    p[0].requires_grad_()
    with pytest.warns(RuntimeWarning, match="VOLBENCH_GAUSSIAN_BACKEND=twin"):
        out = ops.voxelize(*p, (10, 11, 12))
    assert getattr(out.grad_fn, "cpu", None) is None  # not _VoxelSplat: the twin
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        assert ops.backend_name("cpu") == "twin"
        ref = ops.voxelize(*[t.detach() for t in p], (10, 11, 12))
    monkeypatch.setenv(backend.BACKEND_ENV, "auto")
    got = ops.voxelize(*[t.detach() for t in p], (10, 11, 12))
    assert_forward(got.double(), ref.double(), 1.2, CUTOFF)
    monkeypatch.setenv(backend.BACKEND_ENV, "bogus")
    with pytest.raises(ValueError, match="VOLBENCH_GAUSSIAN_BACKEND"):
        ops.backend_name("cpu")
