"""The gpu_ext kernels executed on the CPU, as written, in every CI run (no GPU needed).

gpu_ext/csrc/*.cu are compiled as C++ by g++ with the harness in tests/gpu_ext_harness (no
nvcc, no torch): every CUDA thread is a fiber, the blocks of a grid run in turn, __syncthreads is a
counting barrier over the block's live threads, warp collectives wait for every lane of their
mask and fail loudly when a named lane has exited or diverged, shared memory is poisoned before
each block, atomicAdd is a plain add, CUB's scan and sort are replaced behind the seam in tiles.cu
by a host scan and stable sort, and every buffer ends at a guard page.  Each kernel, forward and
backward, is checked on the same float32 inputs against the float64 PyTorch twin (tile lists
exactly, values and gradients to float32 rounding), or, for indices near 2^31, against a
brute-force double reference in the harness.  Tolerances are tighter than the CUDA parity tests'
(test_gpu_ext_parity.py, same cases from gpu_ext_cases.py): __expf is the exact expf here.
test_kernels_under_sanitizers runs a subset under -fsanitize=address,undefined.
tests/gpu_ext_harness/mutate.py shows that known-bad edits of csrc make these tests fail.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from gpu_ext_cases import (D64, RASTER_CASES, RASTER_PIXEL_SIZE, VOX_CASES, VOX_SPACING,
                           assert_forward, cameras)
from gpu_ext_harness import build as hbuild
from gpu_ext_harness import composite_ref as cref
from gpu_ext_harness.emulated_ext import EmulatedExt, EmulatorError, tile_lists
from volbench.gaussian_ops import backend, ops
from volbench.gaussian_ops import torch_impl as twin

pytestmark = pytest.mark.skipif(
    hbuild.compiler() is None or platform.machine() != "x86_64",
    reason="the CPU execution harness needs g++ on x86-64 (its fiber switch is x86-64 assembly)")

CSRC = Path(os.environ.get("VBEMU_CSRC") or hbuild.CSRC)  # mutate.py points it at a mutant
CUTOFF = 3.0
F32 = torch.float32


def _build(tmp_path_factory, flavour):
    out = os.environ.get("VBEMU_BUILD_DIR")
    out = Path(out) if out else tmp_path_factory.mktemp(f"vbemu-{flavour}")
    return EmulatedExt(hbuild.build(out, flavour, CSRC), flavour)


@pytest.fixture(scope="session")
def emu(tmp_path_factory) -> EmulatedExt:
    return _build(tmp_path_factory, "fast")


def upstream(shape, seed):
    """dL/d(output): uniform in [0, 1) with ~10 % exact zeros (the kernels skip those)."""
    g = torch.Generator().manual_seed(seed)
    go = torch.rand(shape, generator=g, dtype=F32)
    return torch.where(torch.rand(shape, generator=g) < 0.1, torch.zeros_like(go), go)


def assert_grads_close(got, ref, names, rtol=1e-4, row_rtol=1e-3):
    """Every gradient tensor within rtol (Frobenius), every Gaussian's row within row_rtol of
    its own norm + 1e-5 of the largest row norm."""
    for name, a, b in zip(names, got, ref):
        a, b = a.double().reshape(b.shape[0], -1), b.double().reshape(b.shape[0], -1)
        assert torch.isfinite(a).all(), f"{name}: not finite"
        nb = b.norm().item()
        if nb == 0:
            assert a.norm().item() == 0, name
            continue
        assert (a - b).norm().item() <= rtol * nb, \
            f"{name}: relative error {(a - b).norm().item() / nb:.3g}"
        rows = b.norm(dim=1)
        err = (a - b).norm(dim=1)
        bad = err > row_rtol * rows + 1e-5 * rows.max()
        assert not bad.any(), f"{name}: rows {bad.nonzero().flatten()[:8].tolist()} off"


# ----------------------------------------------------------------------------- voxelizer

EMU_VOX = sorted(c for c in VOX_CASES if c != "larger")  # "larger" takes minutes emulated


def vox_inputs(case):
    params, shape, roi, origin = VOX_CASES[case]
    means, ls, q, amps = params
    A, half = twin.prepare_3d(means, ls, q, CUTOFF)
    geom = twin._roi_geometry(shape, VOX_SPACING, origin, roi)
    n = means.shape[0]
    return {"means": means.to(F32), "A": A.reshape(n, 9).to(F32), "amps": amps.to(F32),
            "half": half.to(F32), "geom": geom}


def vox_reference(inp, go):
    """float64 twin on the float32 inputs: output and gradients (means, A (N,9), amps)."""
    m = inp["means"].double().requires_grad_()
    A = inp["A"].double().reshape(-1, 3, 3).requires_grad_()
    a = inp["amps"].double().requires_grad_()
    ref = twin.splat_voxels(m, A, a, inp["half"].double(), *inp["geom"], CUTOFF)
    ref.backward(go.double())
    return ref.detach(), (m.grad, A.grad.reshape(-1, 9), a.grad)


def vox_expected_lists(inp):
    """The tile boxes, ids and ranges the kernels must produce: the twin's binning rule in
    float32 on mean - origin (taken in float64, as the kernels do)."""
    origin, sp, shape = inp["geom"]
    rel = (inp["means"].double() - torch.tensor(origin, dtype=D64)).to(F32)
    lo, hi = twin._index_range(rel, inp["half"], torch.tensor(sp, dtype=F32), torch.tensor(shape))
    tiles = [-(-int(s) // 8) for s in shape]
    empty = (hi < lo).any(-1, keepdim=True)
    tlo = torch.where(empty, torch.ones_like(lo), lo // 8)
    thi = torch.where(empty, torch.zeros_like(hi), hi // 8)
    boxes = torch.stack([tlo[:, 0], thi[:, 0], tlo[:, 1], thi[:, 1], tlo[:, 2], thi[:, 2]], 1)
    ids, ranges = tile_lists(tlo, thi, torch.zeros(len(lo), dtype=torch.long), tiles,
                             tiles[0] * tiles[1] * tiles[2])
    return boxes, ids, ranges


def assert_lists(got_boxes, got_ids, got_ranges, boxes, ids, ranges):
    assert torch.equal(got_boxes.long(), boxes.long()), "tile boxes differ from the twin's"
    assert torch.equal(got_ranges, ranges), "tile ranges differ from the twin's"
    assert len(got_ids) == max(1, len(ids))
    assert torch.equal(got_ids[:len(ids)], ids), "tile lists differ from the twin's"


def check_voxelizer(ext, case):
    inp = vox_inputs(case)
    origin, sp, shape = inp["geom"]
    out, ids, ranges = ext.voxelize_forward(inp["means"], inp["A"], inp["amps"], inp["half"],
                                            origin, sp, shape, CUTOFF)
    assert_lists(ext.last["boxes"], ids, ranges, *vox_expected_lists(inp))
    if case == "crowded":
        assert (ranges[1::2] - ranges[0::2]).max() > 512, "must fill two shared-memory batches"
    go = upstream(out.shape, seed=len(case))
    grads = ext.voxelize_backward(go, inp["means"], inp["A"], inp["amps"], ids, ranges, origin,
                                  sp, shape, CUTOFF)
    ref, ref_grads = vox_reference(inp, go)
    assert out.shape == ref.shape
    assert ref.abs().max() > 0.1
    assert_forward(out.double(), ref, inp["amps"].max().item(), CUTOFF, rtol=1e-5, atol_rel=2e-6)
    assert_grads_close(grads, ref_grads, ("means", "A", "amps"))


@pytest.mark.parametrize("case", EMU_VOX)
def test_voxelizer_kernels(emu, case):
    check_voxelizer(emu, case)


def test_voxelizer_backward_ignores_nonfinite_upstream_out_of_reach(emu):
    """A NaN / Inf dL/dV at voxels no Gaussian reaches (in tiles that have Gaussians) changes no
    gradient (review finding: the amplitude gradient was not guarded by `hit`)."""
    inp = vox_inputs("needles")
    origin, sp, shape = inp["geom"]
    out, ids, ranges = emu.voxelize_forward(inp["means"], inp["A"], inp["amps"], inp["half"],
                                            origin, sp, shape, CUTOFF)
    go = upstream(out.shape, seed=5)
    ref, _ = vox_reference(inp, go)
    # voxels without any term, in tiles with a non-empty list
    tiles = [-(-s // 8) for s in shape]
    zz, yy, xx = torch.meshgrid(*[torch.arange(s) for s in shape], indexing="ij")
    key = ((zz // 8) * tiles[1] + yy // 8) * tiles[2] + xx // 8
    counts = (ranges[1::2] - ranges[0::2])[key]
    cand = ((ref == 0) & (counts > 0)).nonzero()
    assert len(cand) > 10
    bad = go.clone()
    for k, v in enumerate((math.nan, math.inf, -math.inf, math.nan)):
        bad[tuple(cand[k * (len(cand) // 4)])] = v
    grads = emu.voxelize_backward(bad, inp["means"], inp["A"], inp["amps"], ids, ranges, origin,
                                  sp, shape, CUTOFF)
    clean = torch.where(torch.isfinite(bad), bad, torch.zeros_like(bad))
    _, ref_grads = vox_reference(inp, clean)
    assert_grads_close(grads, ref_grads, ("means", "A", "amps"))


# ----------------------------------------------------------------------------- rasterizer

EMU_RASTER = [(case, cam, mode, 1.5) for case in sorted(RASTER_CASES) if case != "larger"
              for cam in ("axial", "rotated") for mode in ("focus", "3dgs")]
EMU_RASTER += [(case, cam, "focus", sz) for case in ("needles", "straddling")
               for cam in ("axial", "rotated") for sz in (math.inf, 1e-3)]


def raster_inputs(case, cam, mode, sigma_z, nan_items=()):
    params, (H, W) = RASTER_CASES[case]
    means, ls, q, op = params
    cams = cameras(cam)
    mu2, conic, weight, radii = twin.prepare_slices(means, ls, q, op, cams, mode, sigma_z, CUTOFF,
                                                    1e-4, RASTER_PIXEL_SIZE)
    B, N = weight.shape
    inp = {"mean2d": mu2.reshape(B * N, 2).to(F32), "conic": conic.reshape(B * N, 3).to(F32),
           "weight": weight.reshape(B * N).to(F32), "radii": radii.reshape(B * N, 2).to(F32),
           "geom": (B, N, H, W)}
    # non-finite centres with valid radii: the kernels must cull them themselves
    for k, i in enumerate(nan_items):
        inp["mean2d"][i, k % 2] = (math.nan, math.inf, -math.inf)[k % 3]
        inp["radii"][i] = inp["radii"][i].clamp_min(2.0)
    return inp


def raster_reference(inp, go):
    B, N, H, W = inp["geom"]
    m = inp["mean2d"].double().requires_grad_()
    c = inp["conic"].double().requires_grad_()
    w = inp["weight"].double().requires_grad_()
    ref = twin.splat_pixels(m.reshape(B, N, 2), c.reshape(B, N, 3), w.reshape(B, N),
                            inp["radii"].double().reshape(B, N, 2), (H, W), RASTER_PIXEL_SIZE,
                            CUTOFF)
    ref.backward(go.double())
    grads = tuple(torch.nan_to_num(t.grad) if t.grad is not None else torch.zeros_like(t)
                  for t in (m, c, w))
    return ref.detach(), grads


def raster_expected_lists(inp):
    B, N, H, W = inp["geom"]
    ps = torch.tensor(RASTER_PIXEL_SIZE, dtype=F32)
    center = inp["mean2d"] / ps
    rad = inp["radii"]
    lo = torch.floor(center - rad).clamp(min=0)
    hi = torch.minimum(torch.ceil(center + rad), torch.tensor([H - 1, W - 1], dtype=F32))
    bad = ~((rad >= 0).all(-1) & torch.isfinite(center).all(-1) & torch.isfinite(rad).all(-1))
    empty = (bad | (hi < lo).any(-1))[:, None]
    lo, hi = lo.nan_to_num().long(), hi.nan_to_num().long()
    tiles = (-(-H // 16), -(-W // 16))
    zero = torch.zeros(B * N, 1, dtype=torch.long)
    tlo = torch.where(empty, torch.ones(B * N, 3, dtype=torch.long),
                      torch.cat([zero, lo // 16], 1))
    thi = torch.where(empty, torch.zeros(B * N, 3, dtype=torch.long),
                      torch.cat([zero, hi // 16], 1))
    key_base = (torch.arange(B * N) // N) * tiles[0] * tiles[1]
    culled = torch.tensor([0, -1, 1, 0, 1, 0])
    boxes = torch.where(empty, culled, torch.cat([zero, zero, tlo[:, 1:2], thi[:, 1:2],
                                                  tlo[:, 2:3], thi[:, 2:3]], 1))
    ids, ranges = tile_lists(tlo, thi, key_base, (1,) + tiles, B * tiles[0] * tiles[1])
    return boxes, key_base, ids, ranges


def check_rasterizer(ext, case, cam, mode, sigma_z, nan_items=()):
    inp = raster_inputs(case, cam, mode, sigma_z, nan_items)
    B, N, H, W = inp["geom"]
    out, ids, ranges = ext.raster_forward(inp["mean2d"], inp["conic"], inp["weight"],
                                          inp["radii"], B, N, H, W, RASTER_PIXEL_SIZE, CUTOFF)
    boxes, key_base, exp_ids, exp_ranges = raster_expected_lists(inp)
    assert torch.equal(ext.last["key_base"], key_base)
    assert_lists(ext.last["boxes"], ids, ranges, boxes, exp_ids, exp_ranges)
    if case == "crowded" and cam == "axial":
        assert (ranges[1::2] - ranges[0::2]).max() > 256, "must fill two shared-memory batches"
    go = upstream(out.shape, seed=len(case) + 7)
    grads = ext.raster_backward(go, inp["mean2d"], inp["conic"], inp["weight"], ids, ranges,
                                B, N, H, W, RASTER_PIXEL_SIZE, CUTOFF)
    ref, ref_grads = raster_reference(inp, go)
    assert out.shape == ref.shape
    amp = max(ref.abs().max().item(), inp["weight"].abs().max().item())
    assert_forward(out.double(), ref, amp, CUTOFF, rtol=1e-5, atol_rel=2e-6)
    assert_grads_close(grads, ref_grads, ("mean2d", "conic", "weight"))
    return out, ref


@pytest.mark.parametrize("case,cam,mode,sigma_z", EMU_RASTER)
def test_rasterizer_kernels(emu, case, cam, mode, sigma_z):
    out, ref = check_rasterizer(emu, case, cam, mode, sigma_z)
    if math.isinf(sigma_z) or sigma_z < 1:
        assert ref.abs().max() > 0.1


def test_rasterizer_culls_nonfinite_centres(emu):
    check_rasterizer(emu, "straddling", "rotated", "focus", 1.5, nan_items=(3, 50, 77, 301, 420))


def test_rasterizer_backward_ignores_nonfinite_upstream_out_of_reach(emu):
    inp = raster_inputs("empty_tiles", "axial", "focus", 1.5)
    B, N, H, W = inp["geom"]
    out, ids, ranges = emu.raster_forward(inp["mean2d"], inp["conic"], inp["weight"],
                                          inp["radii"], B, N, H, W, RASTER_PIXEL_SIZE, CUTOFF)
    go = upstream(out.shape, seed=3)
    ref, _ = raster_reference(inp, go)
    tiles = (-(-H // 16), -(-W // 16))
    bb, rr, cc = torch.meshgrid(torch.arange(B), torch.arange(H), torch.arange(W), indexing="ij")
    key = (bb * tiles[0] + rr // 16) * tiles[1] + cc // 16
    cand = ((ref == 0) & ((ranges[1::2] - ranges[0::2])[key] > 0)).nonzero()
    assert len(cand) > 10
    bad = go.clone()
    for k, v in enumerate((math.nan, math.inf, -math.inf)):
        bad[tuple(cand[k * (len(cand) // 3)])] = v
    grads = emu.raster_backward(bad, inp["mean2d"], inp["conic"], inp["weight"], ids, ranges,
                                B, N, H, W, RASTER_PIXEL_SIZE, CUTOFF)
    _, ref_grads = raster_reference(inp, torch.where(torch.isfinite(bad), bad, 0 * bad))
    assert_grads_close(grads, ref_grads, ("mean2d", "conic", "weight"))


def test_kernels_under_round_robin_schedule(emu):
    """The other schedule of the runtime (every runnable thread in turn: warps in step, thread 0
    ahead of its block) on the multi-batch cases."""
    rr = EmulatedExt(emu.exe)
    rr.env["VBEMU_SCHEDULE"] = "round"
    check_voxelizer(rr, "crowded")
    check_rasterizer(rr, "crowded", "axial", "3dgs", 1.5)
    check_composite(rr, "crowded", False)
    check_composite(rr, "saturated", False)


# ----------------------------------------------------------------------------- compositing

def comp_args(case, additive):
    return (case["m2"], case["conic"], case["wpeak"], case["order"], case["values"], case["H"],
            case["W"], *case["ps"], case["cutoff"], additive)


def assert_comp_lists(case, ids, ranges):
    """Every (slice, tile) list holds the items (slice, rank) whose pair reaches a pixel of the
    tile (conservative boxes may add more), only items of that slice with order != -1, in
    ascending rank, i.e. in compositing order."""
    need, n_keys = cref.expected_lists(case)
    B, N = case["order"].shape
    per_slice = n_keys // max(B, 1)
    assert ranges.numel() == 2 * max(n_keys, 1)
    for key in range(n_keys):
        lo, hi = ranges[2 * key].item(), ranges[2 * key + 1].item()
        items = ids[lo:hi].long()
        if len(items):
            assert (items[1:] > items[:-1]).all(), f"key {key}: not in compositing order"
            assert (items // N == key // per_slice).all(), f"key {key}: item of another slice"
            assert (case["order"].reshape(-1)[items] >= 0).all(), f"key {key}: a -1 item listed"
        missing = set(need.get(key, [])) - set(items.tolist())
        assert not missing, f"key {key}: items {sorted(missing)[:8]} missing"


def check_composite(ext, name, additive, lists=True):
    case = cref.make_case(name)
    args = comp_args(case, additive)
    out, alpha, *saved = ext.composite_fwd(*args)
    t_save, n_live, ids, ranges = saved
    if lists:
        assert_comp_lists(case, ids, ranges)
    go, ga = cref.upstream(case, seed=len(name) + int(additive))
    grads = ext.composite_bwd(*args, saved, go, ga)
    ref_out, ref_alpha, ref_grads = cref.reference(case, additive, go, ga)
    ref_grads = [torch.nan_to_num(g) for g in ref_grads]  # NaN centres: their own rows only
    cref.assert_close_forward(out, ref_out, 1e-5, 2e-6, "out")
    cref.assert_close_forward(alpha, ref_alpha, 1e-5, 2e-6, "alpha")
    cref.assert_grads(grads, ref_grads)
    return case, out, alpha, saved


@pytest.mark.parametrize("additive", [False, True], ids=["composite", "additive"])
@pytest.mark.parametrize("name", cref.CASES)
def test_composite_kernels(emu, name, additive):
    """composite_fwd / composite_bwd (composite_fwd.cu, composite_bwd.cu) against the dense
    float64 reference of the contract: outputs, alpha, the gradients of m2, conic, wpeak and
    values, and the tile lists (membership, compositing order)."""
    case, out, alpha, (t_save, n_live, ids, ranges) = check_composite(emu, name, additive)
    counts = ranges[1::2] - ranges[0::2]
    if name == "crowded":
        assert counts.max() > 256, "must fill two shared-memory batches"
    if name == "mixed":
        assert alpha[2].abs().max() == 0 and out[2].abs().max() == 0, "empty slice"
        assert counts[2 * len(counts) // 3:].sum() == 0
    if name == "saturated" and not additive:
        # the clamp is reached and the walk of the backward stops where T < 1e-30
        assert (case["wpeak"] == 1).sum() >= 30
        H, W = case["H"], case["W"]
        rr, cc = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
        total = counts[(rr // 16) * (-(-W // 16)) + cc // 16]
        stopped = n_live < total
        assert stopped.sum() > 10 and (t_save[stopped] < 1e-30).all()
        assert (alpha[stopped] == 1).all()


@pytest.mark.parametrize("name", ["mixed", "saturated", "features"])
def test_composite_reference_matches_twin(name):
    """The dense reference of these tests and the twin's splat stage (gaussian_ops/composite.py,
    float64, its own pixel positions and cutoff test) agree: one contract."""
    from volbench.gaussian_ops import composite

    twin_splat = getattr(composite, "splat_twin", None)
    if twin_splat is None:
        pytest.skip("gaussian_ops.composite has no splat_twin")
    case = cref.make_case(name)
    ins = [case[k].double() if case[k].is_floating_point() else case[k]
           for k in ("m2", "conic", "wpeak", "order", "values")]
    for additive in (False, True):
        out, alpha = twin_splat(*ins, case["H"], case["W"], *case["ps"], case["cutoff"], additive)
        ref_out, ref_alpha = cref.reference(case, additive)
        cref.assert_close_forward(out, ref_out, 1e-5, 2e-6, "twin out")
        cref.assert_close_forward(alpha, ref_alpha, 1e-5, 2e-6, "twin alpha")


def test_composite_order_decides(emu):
    """Reversing the order of one slice changes the composite image, not the additive one."""
    case = cref.make_case("ties")
    rev = dict(case)
    order = case["order"].clone()
    kept = (order[0] >= 0).sum()
    order[0, :kept] = order[0, :kept].flip(0)
    rev["order"] = order
    a = emu.composite_fwd(*comp_args(case, False))[0]
    b = emu.composite_fwd(*comp_args(rev, False))[0]
    assert (a[0] - b[0]).abs().max() > 0.05 and torch.equal(a[1], b[1])
    cref.assert_close_forward(b, cref.reference(rev, False)[0], 1e-5, 2e-6, "reversed")
    a = emu.composite_fwd(*comp_args(case, True))[0]
    b = emu.composite_fwd(*comp_args(rev, True))[0]
    cref.assert_close_forward(a, b.double(), 1e-5, 1e-6, "additive")


def test_composite_checks(emu):
    """The driver's (bindings.cpp's) checks: order outside [-1, N), bad shapes, B*N >= 2^31."""
    case = cref.make_case("no_values")
    bad = dict(case)
    bad["order"] = case["order"].clone()
    bad["order"][0, 0] = case["order"].shape[1]
    with pytest.raises(EmulatorError, match=r"outside \[-1, N\)"):
        emu.composite_fwd(*comp_args(bad, False))
    bad["order"][0, 0] = -2
    with pytest.raises(EmulatorError, match=r"outside \[-1, N\)"):
        emu.composite_fwd(*comp_args(bad, False))
    with pytest.raises(EmulatorError, match="shapes"):
        emu.composite_fwd(case["m2"], case["conic"][:, :-1], *comp_args(case, False)[2:])
    # B * N = 2^31 pairs: refused from the geometry, before any input is read or allocated
    with tempfile.TemporaryDirectory(prefix="vbemu-") as d:
        (Path(d) / "params.txt").write_text("B 65536\nN 32768\nH 16\nW 16\nF 1\n"
                                            "pixel_size 1 1\ncutoff 3\nadditive 0\n")
        with pytest.raises(EmulatorError, match="too many"):
            emu.run("comp_fwd", d)


# ----------------------------------------------------------------------------- whole operators

@pytest.fixture
def emulated_backend(emu, monkeypatch):
    """ops.py's CUDA path on CPU float32 tensors, with the emulated kernels as the extension."""
    monkeypatch.setattr(backend, "load", lambda: emu)
    monkeypatch.setattr(ops, "uses_cuda", lambda *ts: all(t.dtype == F32 for t in ts))
    return emu


def _both(fn, params, seed=0):
    res = []
    for dtype in (F32, D64):
        ps = [p.to(dtype).clone().requires_grad_() for p in params]
        out = fn(*ps)
        w = torch.rand(out.shape, generator=torch.Generator().manual_seed(seed), dtype=D64)
        (out * w.to(dtype)).sum().backward()
        res.append((out.detach().double(), [p.grad.double() for p in ps]))
    return res


@pytest.mark.parametrize("case", ["roi", "far_origin"])
def test_voxelize_operator_on_emulated_kernels(emulated_backend, case):
    """ops.voxelize's CUDA branch (prelude, _VoxelSplat, reshapes) against the float64 twin."""
    params, shape, roi, origin = VOX_CASES[case]
    (o32, g32), (o64, g64) = _both(
        lambda m, l, q, a: ops.voxelize(m, l, q, a, shape, VOX_SPACING, origin, CUTOFF, roi), params)
    assert_forward(o32, o64, params[3].max().item(), CUTOFF)
    assert_grads_close(g32, g64, ("means", "log_scales", "quats", "amps"), rtol=1e-3, row_rtol=1e-2)


def test_rasterize_operator_on_emulated_kernels(emulated_backend, monkeypatch):
    """ops.rasterize_slices's CUDA branch, two cameras per launch, against the float64 twin."""
    params, image_shape = RASTER_CASES["needles"]
    monkeypatch.setattr(ops, "_MAX_PAIRS", 2 * params[0].shape[0])

    def fn(m, l, q, o):
        return ops.rasterize_slices(m, l, q, o, cameras("rotated", m.dtype), image_shape,
                                    RASTER_PIXEL_SIZE, mode="focus", sigma_z=1.5, cutoff=CUTOFF)

    (o32, g32), (o64, g64) = _both(fn, params)
    assert_forward(o32, o64, max(o64.abs().max().item(), 1.0), CUTOFF)
    assert_grads_close(g32, g64, ("means", "log_scales", "quats", "opacities"), rtol=1e-3,
                       row_rtol=1e-2)


def test_double_backward_fails_loudly(emulated_backend):
    """The kernels' backward is not differentiable: @once_differentiable makes a double backward
    an error instead of a silently wrong (zero) second derivative."""
    params = [p.to(F32).requires_grad_() for p in VOX_CASES["one"][0]]
    out = ops.voxelize(*params, (12, 13, 14), VOX_SPACING, VOX_CASES["one"][3], CUTOFF)
    (gm,) = torch.autograd.grad((out * out).sum(), params[0], create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        gm.sum().backward()
    params = [p.to(F32).requires_grad_() for p in RASTER_CASES["one"][0]]
    img = ops.rasterize_slices(*params, cameras("axial", F32), (20, 23), RASTER_PIXEL_SIZE)
    (gm,) = torch.autograd.grad((img * img).sum(), params[0], create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        gm.sum().backward()


# ----------------------------------------------------------------------------- limits, runtime

def test_indices_near_2_31(emu):
    """Gaussian indices up to 2^31 - 2 (the bindings accept 2^31 - 1 items): the index products
    (3*gi, 9*gi, 2*gi, 6*i, ...) are 64-bit.  Arrays are mapped lazily; the per-item kernels run
    their last block only; brute-force double reference (review finding a)."""
    assert "bigindex ok" in emu.run("bigindex").stdout


def test_pair_limit_checked_before_allocation(emu):
    """2^31 (tile, item) pairs are refused with the clear message before ~24 bytes per pair are
    allocated (review finding d): the test allocator refuses anything above 64 MiB."""
    assert "more than 2^31" in emu.run("pairlimit").stdout


SELFTESTS_OK = ["collectives", "barrier", "poison", "missing_barrier", "launch_config"]
SELFTESTS_FAIL = {
    "diverge": "warp divergence",
    "exited_lane": "exited while lanes",
    "coll_vs_barrier": "waits at __syncthreads",
    "barrier_sites": "different __syncthreads",
    "mask_self": "does not name the calling lane",
    "sort_bits": "bits above end_bit",
}


@pytest.mark.parametrize("name", SELFTESTS_OK + sorted(SELFTESTS_FAIL))
def test_harness_runtime(emu, name):
    """The runtime itself: warp collectives (shfl down/up/xor/idx with widths, any/all/ballot,
    disjoint masks), the barrier over live threads, poisoned shared memory (also after a block
    wrote it), a missing barrier made visible, launch limits; and loud failures for divergent
    or exited lanes, a barrier vs a collective, barriers at different sites, a mask without the
    caller, a sort key beyond end_bit."""
    if name in SELFTESTS_OK:
        assert f"selftest {name} ok" in emu.run("selftest", name).stdout
        return
    with pytest.raises(EmulatorError) as err:
        emu.run("selftest", name)
    assert err.value.returncode == 86 and SELFTESTS_FAIL[name] in err.value.stderr


# ----------------------------------------------------------------------------- sanitizers

SANITIZED_VOX = ["crowded", "roi", "nan_means", "odd_sizes"]
SANITIZED_RASTER = [("crowded", "axial", "focus", 1.5), ("needles", "rotated", "3dgs", 1.5)]


def test_kernels_under_sanitizers(tmp_path_factory):
    """The harness built with -fsanitize=address,undefined (every report fatal; no -fwrapv, so
    a signed overflow in an index product is reported): the runtime's checks, the limits and a
    subset of the cases, forward and backward.  An out-of-bounds index into a __shared__ array
    is reported by UBSan's bounds check (GCC's ASan leaves the shared section uninstrumented);
    global memory is heap memory with ASan's redzones."""
    san = _build(tmp_path_factory, "sanitize")
    for name in SELFTESTS_OK:
        san.run("selftest", name)
    with pytest.raises(EmulatorError) as err:
        san.run("selftest", "shared_oob")
    assert "index 32 out of bounds" in err.value.stderr
    san.run("pairlimit")
    san.run("bigindex")
    for case in SANITIZED_VOX:
        check_voxelizer(san, case)
    for args in SANITIZED_RASTER:
        check_rasterizer(san, *args)
    check_rasterizer(san, "straddling", "rotated", "focus", 1.5, nan_items=(3, 50, 77))
    for name, additive in (("mixed", False), ("saturated", False), ("big_f", True)):
        check_composite(san, name, additive, lists=False)


# ----------------------------------------------------------------------------- mutation check

def test_mutation_check_applies_and_catches(emu):
    """tests/gpu_ext_harness/mutate.py (run in full by hand, ~1.5 min): every mutant's edit still
    applies to the sources, and one mutant run end to end is caught."""
    from gpu_ext_harness import mutate

    assert not mutate.check_applicable()
    res = subprocess.run([sys.executable, str(Path(mutate.__file__)), "--no-baseline",
                          "--build-dir", str(emu.exe.parent), "--only", "no_reuse_barrier"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and "caught   no_reuse_barrier" in res.stdout, \
        res.stdout[-2000:] + res.stderr[-2000:]
