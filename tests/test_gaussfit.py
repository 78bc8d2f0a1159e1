"""Shared pieces of the Gaussian codecs: Morton order, the quantised / raw / float16 payloads
(bit widths, round-trip error bounds, corruption), the focus-equivalent 3D Gaussian, geometry
helpers, losses and the training history."""

from __future__ import annotations

import csv
import lzma
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from volbench import history  # noqa: E402
from volbench.errors import CorruptFile  # noqa: E402
from volbench.gaussian_ops import fixed, ops  # noqa: E402
from volbench.gaussian_training import common, fileformat, losses, morton  # noqa: E402
from volbench.gaussian_training.focus3d import focus_equivalent, focus_prepared_fixed  # noqa: E402
from volbench.gaussian_training.progress import Progress  # noqa: E402

BITS = {"position": 14, "opacity": 12, "scale": 12, "rotation": 12}


def random_gaussians(n=500, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.uniform([0, 0, 0], [20, 60, 50], (n, 3)).astype(np.float32)
    log_scales = rng.uniform(-1.5, 1.5, (n, 3)).astype(np.float32)
    quats = rng.normal(size=(n, 4)).astype(np.float32)
    opacity = rng.uniform(0, 1, n).astype(np.float32)
    return means, log_scales, quats, opacity


# -- Morton ---------------------------------------------------------------------------------------
def test_morton_known_codes_and_roundtrip():
    # axis 0 (z) is the most significant of each bit triple
    assert morton.encode(np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 2]])).tolist() == [1, 2, 4, 7, 8]
    rng = np.random.default_rng(1)
    ijk = rng.integers(0, 1 << 21, (1000, 3))
    assert np.array_equal(morton.decode(morton.encode(ijk)), ijk)
    with pytest.raises(ValueError):
        morton.encode(np.array([[1 << 21, 0, 0]]))


def test_morton_order_is_z_order():
    ijk = np.array([[z, y, x] for z in range(4) for y in range(4) for x in range(4)])
    perm = morton.order(ijk[::-1])
    codes = morton.encode(ijk[::-1][perm])
    assert np.all(np.diff(codes.astype(np.int64)) == 1)  # a full 4^3 cube: consecutive codes 0..63
    # the first 8 of the order are the 2x2x2 corner block
    assert {tuple(v) for v in ijk[::-1][perm][:8]} == {(z, y, x) for z in (0, 1) for y in (0, 1) for x in (0, 1)}


# -- quantised payload ----------------------------------------------------------------------------
def test_quantised_roundtrip_within_half_step_and_morton_sorted():
    means, log_scales, quats, opacity = random_gaussians()
    header, payload = fileformat.pack_quantised(means, log_scales, quats, opacity, BITS)
    assert header["bits"] == BITS and header["n"] == len(means)
    out = fileformat.unpack_quantised(header, payload)
    # the decoder returns the Gaussians in Morton order: recover the permutation from the encoder's
    lo, hi = np.array(header["bbox_lo"]), np.array(header["bbox_hi"])
    levels = (1 << 14) - 1
    q = np.rint((means.astype(np.float64) - lo) / (hi - lo) * levels).astype(np.int64)
    perm = morton.order(q)
    qdec = np.rint((out["means"].astype(np.float64) - lo) / (hi - lo) * levels).astype(np.int64)
    codes = morton.encode(qdec)
    assert np.all(np.diff(codes.astype(np.int64)) >= 0), "payload is not in Morton order"
    bounds = fileformat.quantisation_error_bounds(header)
    tol = 1e-5
    assert np.all(np.abs(out["means"] - means[perm]) <= bounds["means"] * (1 + 1e-6) + tol * np.abs(hi))
    assert np.abs(out["opacity"] - opacity[perm]).max() <= bounds["opacity"] + 1e-6
    assert np.abs(out["log_scales"] - log_scales[perm]).max() <= bounds["log_scales"] + 1e-5
    canon = fileformat.canonical_quats(quats)[perm]
    assert np.all(canon[:, 0] >= 0)
    assert np.abs(out["quats"] - canon).max() <= bounds["quats"] + 1e-6
    # the stated bounds are those of 14 / 12 bits
    assert bounds["opacity"] == pytest.approx(0.5 / 4095)
    assert np.allclose(bounds["means"], (hi - lo) / (2 * 16383))
    # a rotation by q and by -q is the same: the canonical form keeps the covariance
    S = ops.covariance(torch.from_numpy(log_scales[perm]).double(), torch.from_numpy(quats[perm]).double())
    S2 = ops.covariance(torch.from_numpy(log_scales[perm]).double(), torch.from_numpy(canon).double())
    assert torch.allclose(S, S2, atol=1e-9)


def test_quantised_streams_are_delta_coded_lzma():
    means, log_scales, quats, opacity = random_gaussians(300, seed=2)
    header, payload = fileformat.pack_quantised(means, log_scales, quats, opacity, BITS)
    magic, n, *lens = fileformat._QHEAD.unpack_from(payload, 0)
    assert magic == b"GPQ1" and n == 300 and sum(lens) + fileformat._QHEAD.size == len(payload)
    # the position stream: LZMA2 raw of int16 per-component first differences of the 14-bit codes
    raw = lzma.decompress(payload[fileformat._QHEAD.size:fileformat._QHEAD.size + lens[0]],
                          format=lzma.FORMAT_RAW, filters=fileformat._LZMA_FILTERS)
    d = np.frombuffer(raw, dtype="<i2").reshape(3, 300)
    q = np.cumsum(d.astype(np.int64), axis=1)
    assert q.min() >= 0 and q.max() <= (1 << 14) - 1
    # smaller widths give a smaller file
    _, small = fileformat.pack_quantised(means, log_scales, quats, opacity,
                                         {"position": 8, "opacity": 6, "scale": 6, "rotation": 6})
    assert len(small) < len(payload)
    # 16-bit positions switch to int32 deltas and still round-trip
    h16, p16 = fileformat.pack_quantised(means, log_scales, quats, opacity, dict(BITS, position=16))
    out = fileformat.unpack_quantised(h16, p16)
    assert np.abs(np.sort(out["means"][:, 0]) - np.sort(means[:, 0])).max() < 20 / 65535


def test_quantised_corruption_is_reported():
    means, log_scales, quats, opacity = random_gaussians(100, seed=3)
    header, payload = fileformat.pack_quantised(means, log_scales, quats, opacity, BITS)
    with pytest.raises(CorruptFile, match="truncated"):
        fileformat.unpack_quantised(header, payload[:10])
    with pytest.raises(CorruptFile, match="stream table"):
        fileformat.unpack_quantised(header, payload[:-3])
    with pytest.raises(CorruptFile, match="magic"):
        fileformat.unpack_quantised(header, b"XXXX" + payload[4:])
    with pytest.raises(CorruptFile, match="header says"):
        fileformat.unpack_quantised(dict(header, n=99), payload)
    bad = bytearray(payload)
    bad[fileformat._QHEAD.size + 5] ^= 0xFF  # inside the position stream
    with pytest.raises(CorruptFile):
        fileformat.unpack_quantised(header, bytes(bad))
    with pytest.raises(CorruptFile, match="unknown"):
        fileformat.unpack_gaussians(dict(header, format="zip"), payload)


def test_raw_and_f16_sizes_exact():
    means, log_scales, quats, opacity = random_gaussians(77, seed=4)
    header, payload = fileformat.pack_raw(means, log_scales, quats, opacity)
    assert len(payload) == 8 + 44 * 77
    out = fileformat.unpack_raw(header, payload)
    assert np.array_equal(out["means"], means) and np.array_equal(out["opacity"], opacity)
    with pytest.raises(CorruptFile):
        fileformat.unpack_raw(header, payload[:-4])
    pos = np.random.default_rng(0).uniform(0, 1, (77, 3))
    blob = fileformat.pack_f16(pos, np.full((77, 3), 0.01), quats, opacity)
    assert len(blob) == 22 * 77
    g = fileformat.unpack_f16(blob, 77)
    assert np.abs(g["pos"] - pos).max() <= 2 ** -11  # float16: 11 significant bits on [0.5, 1)
    with pytest.raises(CorruptFile, match="22 x"):
        fileformat.unpack_f16(blob[:-22], 77)


# -- the focus model as a 3D Gaussian -------------------------------------------------------------
def test_focus_equivalent_slices_equal_focus_renders():
    """Voxelizing the focus-equivalent Gaussians gives the focus-rendered axial slices."""
    g = torch.Generator().manual_seed(0)
    n = 12
    shape, spacing = (7, 20, 18), (2.0, 1.0, 1.0)
    means = torch.rand(n, 3, generator=g, dtype=torch.float64) * torch.tensor([12.0, 19.0, 17.0])
    log_scales = torch.rand(n, 3, generator=g, dtype=torch.float64) * 1.2 - 0.3
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    opacity = torch.rand(n, generator=g, dtype=torch.float64)
    sigma_z = 1.7
    # a large cutoff so that both truncations are negligible
    cut = 7.0
    cams = ops.axial_cameras(range(shape[0]), spacing, dtype=torch.float64)
    rendered = ops.rasterize_slices(means, log_scales, quats, opacity, cams, shape[1:], spacing[1:],
                                    mode="focus", sigma_z=sigma_z, cutoff=cut, opacity_threshold=1e-12)
    m, ls, q, a = focus_equivalent(means, log_scales, quats, opacity, sigma_z)
    vox = ops.voxelize(m, ls, q, a, shape, spacing=spacing, cutoff=cut)
    assert rendered.abs().max() > 0.05
    assert torch.allclose(vox, rendered, atol=1e-9 * float(rendered.abs().max()) + 1e-10, rtol=1e-6)


def test_focus_equivalent_limits():
    # an isotropic Gaussian: S' = S + sigma^2 e_z e_z^T, amplitude alpha / (2D footprint's sqrt(det))
    m, ls, q, a = focus_equivalent(torch.zeros(1, 3, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64),
                                   torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64),
                                   torch.tensor([0.5], dtype=torch.float64), 2.0)
    S = ops.covariance(ls, q)[0]
    assert torch.allclose(S, torch.diag(torch.tensor([5.0, 1.0, 1.0], dtype=torch.float64)), atol=1e-9)
    assert float(a[0]) == pytest.approx(0.5)  # S_2d = identity (no z coupling)
    with pytest.raises(ValueError):
        focus_equivalent(m, ls, q, a, 0.0)


def test_focus_prepared_fixed_is_focus_equivalent():
    """The decoders' closed form (no eigendecomposition) voxelizes to focus_equivalent's mixture."""
    g = torch.Generator().manual_seed(4)
    n, shape, spacing = 30, (7, 20, 18), (2.0, 1.0, 1.0)
    means = torch.rand(n, 3, generator=g, dtype=torch.float64) * torch.tensor([12.0, 19.0, 17.0])
    log_scales = torch.rand(n, 3, generator=g, dtype=torch.float64) * 2.0 - 1.0
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    opacity = torch.rand(n, generator=g, dtype=torch.float64)
    for sigma_z in (0.2, 1.7, 50.0):
        m, ls, q, a = focus_equivalent(means, log_scales, quats, opacity, sigma_z)
        ref = ops.voxelize(m, ls, q, a, shape, spacing=spacing, cutoff=3.0)
        A, half, amp = focus_prepared_fixed(means, log_scales, quats, opacity, sigma_z, 3.0)
        got = fixed.splat_fixed(means, A, amp, half, shape, spacing, cutoff=3.0)
        assert ref.abs().max() > 0.1
        assert (got - ref).abs().max().item() <= n * 2.0 ** -32, sigma_z
        torch.testing.assert_close(amp, a, rtol=1e-12, atol=0)
    with pytest.raises(ValueError):
        focus_prepared_fixed(means, log_scales, quats, opacity, 0.0, 3.0)


def test_covariance_params_roundtrip():
    g = torch.Generator().manual_seed(5)
    ls = torch.rand(20, 3, generator=g, dtype=torch.float64) - 0.5
    q = torch.randn(20, 4, generator=g, dtype=torch.float64)
    S = ops.covariance(ls, q)
    ls2, q2 = common.covariance_to_params(S)
    assert torch.allclose(ops.covariance(ls2, q2), S, atol=1e-10)
    assert bool((q2[:, 0] >= 0).all())


# -- losses and history ---------------------------------------------------------------------------
def test_ssim_and_l1_dssim():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 24, 24, generator=g)
    assert float(losses.ssim2d(a, a)) == pytest.approx(1.0, abs=1e-5)
    assert float(losses.l1_dssim(a, a, 0.2)) == pytest.approx(0.0, abs=1e-5)
    b = (a + 0.1 * torch.rand(2, 24, 24, generator=g)).clamp(0, 1)
    val = float(losses.l1_dssim(b, a, 0.2))
    assert val == pytest.approx(float((b - a).abs().mean()) + 0.2 * (1 - float(losses.ssim2d(b, a))), rel=1e-6)
    assert 0 < float(losses.ssim2d(b, a)) < 1


def test_scale_bounds_and_sparsity():
    s = torch.tensor([[0.2, 0.01, 0.01], [0.01, 0.01, 0.00001]])
    expected = ((math.sqrt(0.04 + 0.0002) - 0.1) ** 2 + (1e-4 - 1e-5) ** 2) / 2
    assert float(losses.scale_bounds(s, 1e-4, 0.1)) == pytest.approx(expected, rel=1e-5)
    assert float(losses.sparsity(torch.tensor([0.2, 0.4]))) == pytest.approx(0.3)


def test_progress_history_csv(tmp_path):
    p = Progress("t", 3, tmp_path, enabled=False)
    p.log(1, 0.5, 0.01, 10)
    p.log(3, 0.25, 0.0, 12, stage="decoded_file")
    p.close()
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert tuple(rows[0]) == history.COLUMNS and rows[0]["stage"] == "train"
    assert float(rows[0]["psnr"]) == pytest.approx(20.0) and rows[1]["psnr"] == "inf"
    assert rows[1]["stage"] == "decoded_file" and rows[1]["n_gaussians"] == "12"


# -- densification conserves the rendered energy (focus-model notes, fact 6) ----------------------
def _interior_gaussians(n=40, seed=0, depth=24, side=48):
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) * torch.tensor([8.0 * 2, 20.0, 20.0]) + torch.tensor([8.0 * 2, 14.0, 14.0])
    log_scales = torch.log(torch.rand(n, 3, generator=g) * 1.5 + 0.8)
    quats = torch.randn(n, 4, generator=g)
    opacity = torch.rand(n, generator=g) * 0.3 + 0.1
    return means, log_scales, quats / quats.norm(dim=1, keepdim=True), opacity


@pytest.mark.parametrize("mode", ["focus", "3dgs"])
def test_densification_leaves_the_rendered_slices_nearly_unchanged(mode):
    """Clone: the original and its clone at alpha / 2 render the same slices; split: the children's
    opacities keep the energy of the rendered stack (3DGS copies alpha: clones double it, and in
    3dgs mode splits at s / 1.6 keep 0.78 of it); the moment-matched split also keeps the shape."""
    from volbench.gaussian_training import slicefit
    from volbench.gaussian_training.gset import GaussianSet

    D, H, W, sw, sz = 24, 48, 48, (2.0, 1.0, 1.0), 2.0
    means, log_scales, quats, opacity = _interior_gaussians()
    n = len(means)
    p = dict(cutoff=4.0, opacity_threshold=1e-8, densify_grad_threshold=0.5, max_gaussians=10 * n, min_opacity=0.0)

    def stack(gs):
        return slicefit.render_stack(ops, gs.params, D, (H, W), sw, mode, sz, p, "cpu").double()

    def fresh():
        t = {"means": means, "log_scales": log_scales, "quats": quats, "opacity": slicefit._logit(opacity)}
        return GaussianSet(t, {k: 0.01 for k in t})

    for kind, pd, split in (("clone", 1e9, "sample"), ("split", 0.0, "sample"), ("split", 0.0, "moment")):
        gs = fresh()
        before = stack(gs)
        hot = torch.zeros(n)
        hot[: n // 2] = 1.0  # densify half of them
        ev = slicefit._densify_and_prune(gs, hot, dict(p, percent_dense=pd, split=split), 1.0,
                                         torch.Generator().manual_seed(1), True, mode, sz)
        assert ev[{"clone": "cloned", "split": "split"}[kind]] == n // 2 and gs.n == n + n // 2
        after = stack(gs)
        energy = float(after.sum() / before.sum())
        rel = float((after - before).norm() / before.norm())
        if kind == "clone":
            assert energy == pytest.approx(1.0, abs=1e-5) and rel < 1e-5, (mode, energy, rel)
        else:
            assert energy == pytest.approx(1.0, abs=0.02), (mode, split, energy)
            if split == "moment":
                assert rel < 0.15, (mode, rel)
    # 3DGS copies alpha: a clone doubles the energy; two split children at the parent's alpha
    # nearly double it in focus mode (2 pi alpha per slice whatever the scale) and keep ~0.7 of it
    # in 3dgs mode (alpha s^2 in the plane, 2 / 1.6^2 = 0.78, times the axial change)
    op = torch.tensor([0.4])
    ls = torch.zeros(1, 3)
    q = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    parent = slicefit.stack_energy(ls, q, sz, mode)
    child = slicefit.stack_energy(ls - math.log(slicefit.SPLIT_FACTOR), q, sz, mode)
    ratio = float(2 * child / parent)
    assert (ratio > 1.8) if mode == "focus" else (0.6 < ratio < 0.78)
    assert float(2 * slicefit.split_opacity(op, parent, child) * child / parent) == pytest.approx(0.4, rel=1e-6)


def test_volmicro_clone_and_split_conserve_voxelized_energy():
    from volbench.gaussian_training import volfit
    from volbench.gaussian_training.gset import GaussianSet

    shape, spacing = (40, 40, 40), (1.0, 1.0, 1.0)
    extent, L = volfit.geometry(shape, spacing)
    pos = torch.tensor([[0.5, 0.5, 0.5], [0.4, 0.6, 0.5], [0.6, 0.45, 0.55]])
    scale = torch.tensor([[0.01] * 3, [0.05, 0.03, 0.03], [0.04, 0.04, 0.02]])
    inten = torch.tensor([0.6, 0.5, 0.4])
    quat = torch.tensor([[1.0, 0, 0, 0], [0.9, 0.3, 0.1, 0.0], [1.0, 0, 0, 0]])
    p = dict(grad_threshold=1e-4, size_threshold=0.02, max_gaussians=100, clone_std=0.01, split_offset=0.25,
             split_factor=0.8, _extent=torch.tensor(extent, dtype=torch.float32), _L=L)

    def total(gs):
        P, S, Q, I = volfit._activated(gs)
        with torch.no_grad():
            return float(volfit.voxelize_unit(ops, P, S, Q, I, shape, spacing, 5.0).double().sum())

    gs = GaussianSet({"pos": volfit._logit(pos), "scale": volfit._inv_softplus(scale), "quat": quat,
                      "intensity": volfit._logit(inten)}, {k: 0.01 for k in ("pos", "scale", "quat", "intensity")})
    before = total(gs)
    ema, ev = volfit._densify(gs, torch.ones(3), p, torch.Generator().manual_seed(0))
    assert ev == {"cloned": 1, "split": 2} and gs.n == 6
    assert total(gs) == pytest.approx(before, rel=0.01)


def test_grad_units_ndc_is_half_the_image_width_times_pixels():
    from volbench.gaussian_training import slicefit

    g = torch.tensor([[5.0, 3e-4, 4e-4]])
    px = slicefit.grad_to_unit(g, (2.0, 1.0, 1.0), (96, 96), "pixel")
    ndc = slicefit.grad_to_unit(g, (2.0, 1.0, 1.0), (96, 96), "ndc")
    assert float(px) == pytest.approx(5e-4) and float(ndc) == pytest.approx(48 * 5e-4)
    with pytest.raises(ValueError):
        slicefit.grad_to_unit(g, (2.0, 1.0, 1.0), (96, 96), "world")


@pytest.mark.parametrize("mode", ["focus", "3dgs"])
def test_data_init_opacities_carry_the_volume_energy(mode):
    """init_data: each Gaussian stands for an equal share of the energy; the initial render's
    energy is that of the slices, and in the focus mode's low-count regime (alpha would exceed
    0.99) the Gaussians are stretched along the scan axis instead."""
    from volbench.gaussian_training import slicefit
    from volumes import blobs

    vol = blobs((16, 40, 40), seed=3, count=6, max_sigma=4.0).astype(np.float32) / 250.0
    sw, sz = (2.0, 1.0, 1.0), 2.0
    p = dict(min_init_scale=0.3, cutoff=3.0, opacity_threshold=1e-6)
    init = slicefit.init_data(vol, sw, 400, p, torch.Generator().manual_seed(0), sz, mode)
    r = slicefit.render_stack(ops, init, vol.shape[0], vol.shape[1:], sw, mode, sz, p, "cpu")
    assert float(r.sum() / vol.sum()) == pytest.approx(1.0, abs=0.25)
    # a bright dense volume and few Gaussians: capacity-limited, stretched along z
    dense = np.full((12, 32, 32), 0.8, np.float32)
    few = slicefit.init_data(dense, sw, 40, p, torch.Generator().manual_seed(0), sz, "focus")
    s = few["log_scales"].exp()
    assert float(torch.sigmoid(few["opacity"]).max()) <= 0.99 + 1e-6
    assert bool((s[:, 0] > s[:, 1]).all())
    r = slicefit.render_stack(ops, few, 12, (32, 32), sw, "focus", sz, p, "cpu")
    # each Gaussian carries at most 2 pi alpha into a slice: 40 of them cannot reach 0.8 on 32 x 32
    bound = 40 * 2 * math.pi * 0.99 / (32 * 32)
    assert 0.5 * bound < float(r[4:8].mean()) <= bound
    flat = dict(few, log_scales=few["log_scales"].clone())
    flat["log_scales"][:, 0] = flat["log_scales"][:, 1]  # the same Gaussians, not stretched
    r_flat = slicefit.render_stack(ops, flat, 12, (32, 32), sw, "focus", sz, p, "cpu")
    assert float(r[4:8].mean()) > 1.25 * float(r_flat[4:8].mean())
