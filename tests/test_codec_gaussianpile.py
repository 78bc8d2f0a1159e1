"""GaussianPile codec (seed 000 sec. 4-5): slice training with the focus model, the Morton /
quantised file and its 'w/o quantisation' variant, decode by voxelization (eq. 12; the
focus-equivalent option, whose slices are the rendered slices), ROI decode, errors, determinism,
presets and rate control."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from volbench import container  # noqa: E402
from volbench.codecs.base import VolumeInfo, _full_header, decode_bytes, encode_volume, file_size  # noqa: E402
from volbench.codecs.gaussianpile import GaussianPile, decode_roi  # noqa: E402
from volbench.codecs import _gaussian as slicecodec  # noqa: E402
from volbench.codecs._gaussian import render_slices  # noqa: E402
from volbench.errors import CorruptFile, VolbenchError  # noqa: E402
from volbench.gaussian_training import fileformat, morton  # noqa: E402
from volbench.metrics import psnr_3d as psnr  # noqa: E402
from decode_checks import assert_rois_are_crops, decode_elsewhere  # noqa: E402
from volumes import blobs  # noqa: E402

WORKFLOW = Path(__file__).resolve().parents[1] / "workflow"

FAST = dict(iterations=60, n_gaussians=250, max_gaussians=400, densify_from=20, densify_until=45,
            densify_interval=10, log_every=20, eval_slices=4, progress=False,
            position_lr=2e-3, opacity_lr=5e-2, scale_lr=1e-2)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    vol = blobs()
    wd = tmp_path_factory.mktemp("gp")
    info = VolumeInfo(name="blobs", spacing=(2.0, 1.0, 1.0), seed=1, device="cpu", threads=2, workdir=wd)
    data, record = encode_volume("gaussianpile", FAST, vol, info)
    path = wd / "v.vbc"
    path.write_bytes(data)
    return vol, data, record, path, wd


def test_trains_to_psnr_with_quantised_file(encoded):
    vol, data, record, path, wd = encoded
    out, header = decode_bytes(data, device="cpu")
    assert out.shape == vol.shape and out.dtype == vol.dtype
    peak = float(vol.max())
    base = psnr(np.zeros_like(vol), vol, peak)
    got = psnr(render_slices(path, "gaussianpile", device="cpu"), vol, peak)  # seed 000's 2D images
    assert got > PSNR_MIN and got > base + 6.0, (got, base)
    # the eq. 12 volume (no sensitivity blur) is dimmer between the Gaussians' centres along z
    # (19.7 dB against 14.4 measured); the next tests check what it is
    assert psnr(out, vol, peak) > base + 4.0
    ch = header["codec_header"]
    assert ch["format"] == "quantised" and ch["bits"] == {"position": 14, "opacity": 12, "scale": 12, "rotation": 12}
    assert ch["sigma_z_w"] == pytest.approx(2.0)  # sigma_z defaults to dz (= 2 in-plane pixels)
    assert ch["mode"] == "focus" and ch["volume_model"] == "eq12"
    # the payload is the streams and nothing else; the file is the container around it
    _, payload = container.unpack(data)
    g = fileformat.unpack_quantised(ch, payload)
    assert len(g["means"]) == ch["n"] <= FAST["max_gaussians"]
    lo, hi = np.array(ch["bbox_lo"]), np.array(ch["bbox_hi"])
    q = np.rint((g["means"].astype(np.float64) - lo) / np.where(hi > lo, hi - lo, 1) * 16383).astype(np.int64)
    assert np.all(np.diff(morton.encode(q).astype(np.int64)) >= 0)
    rows = list(csv.DictReader(open(wd / "history.csv")))
    assert {"iteration", "loss", "psnr", "mse", "n_gaussians", "seconds"} <= set(rows[0])
    assert rows[-1]["stage"] == "decoded_file"
    assert abs(float(rows[-1]["psnr"]) - psnr(out / peak, vol / peak, 1.0)) < 0.2
    assert float(rows[-2]["psnr"]) > float(rows[0]["psnr"]) + 3


PSNR_MIN = 24.0


def _with_codec_header(data, **fields):
    header, payload = container.unpack(data)
    return container.pack(dict(header, codec_header=dict(header["codec_header"], **fields)), payload)


def test_eq12_volume_is_the_thin_focus_limit_and_differs_from_the_slices(encoded):
    """The default decode voxelises the stored Gaussians (seed 000 eq. 12, amplitude
    alpha / sqrt(det S_xy|z)): the focus-equivalent volume in the limit sigma_z -> 0, and not
    the rendered slices, which the sensitivity profile (sigma_z = 2 pixels here) blurs along z."""
    vol, data, record, path, wd = encoded
    eq12, _ = decode_bytes(data, device="cpu")
    thin, _ = decode_bytes(_with_codec_header(data, volume_model="focus", sigma_z_w=1e-4), device="cpu")
    assert np.abs(eq12.astype(np.int64) - thin.astype(np.int64)).max() <= 1
    focus, _ = decode_bytes(_with_codec_header(data, volume_model="focus"), device="cpu")
    rendered = render_slices(path, "gaussianpile", device="cpu")
    peak = float(vol.max())
    assert psnr(rendered, focus, peak) > 35.0  # the option: the rendered slices (next test)
    assert psnr(rendered, eq12, peak) < psnr(rendered, focus, peak) - 5.0
    # a Gaussian thinner along z than the sensitivity puts less into the neighbouring slices
    # without the blur: the eq. 12 volume holds less energy than the rendered stack
    assert eq12.astype(np.float64).sum() < 0.97 * rendered.astype(np.float64).sum()


def test_focus_option_slices_are_rendered_slices(encoded):
    """volume_model "focus": the mixture whose axial slices are the rendered slices."""
    vol, data, record, path, wd = encoded
    out, _ = decode_bytes(_with_codec_header(data, volume_model="focus"), device="cpu")
    rendered = render_slices(path, "gaussianpile", device="cpu")
    assert rendered.shape == vol.shape and rendered.dtype == vol.dtype
    # equal up to the two cutoffs (3 sigma in 3D vs 3 sigma in 2D + opacity culling) and rounding
    # (the voxelizer drops terms beyond 3 sigma in 3D, the renderer beyond 3 sigma in the slice plane:
    # they differ only in tails below exp(-4.5) of a Gaussian's peak)
    diff = np.abs(rendered.astype(np.int64) - out.astype(np.int64))
    assert np.mean(diff <= 1) > 0.93 and diff.max() <= 0.1 * vol.max()
    peak = float(vol.max())
    assert psnr(rendered, out, peak) > 35.0
    assert abs(psnr(rendered, vol, peak) - psnr(out, vol, peak)) < 0.5
    # a subset of slices: the renderer's float sums may round differently with another camera
    # batch (the decoder's fixed arithmetic does not apply here), so one grey level at most
    sub = render_slices(path, "gaussianpile", indices=[1, 5], device="cpu")
    assert np.abs(sub.astype(np.int64) - rendered[[1, 5]].astype(np.int64)).max() <= 1


def test_decode_elsewhere_is_bit_identical(encoded, tmp_path):
    """Another SIMD path (torch's scalar kernels) and thread count give the same voxels."""
    vol, data, record, path, wd = encoded
    here, _ = decode_bytes(data, device="cpu")
    assert np.array_equal(decode_elsewhere(path, tmp_path / "out.npy", threads=1), here)


def test_roi_decode_equals_crop(encoded):
    vol, data, record, path, wd = encoded
    full, _ = decode_bytes(data, device="cpu")
    assert_rois_are_crops(decode_roi, path, full)
    # z-slabs that do not divide the depth give the same values
    header, payload = container.unpack(data)
    ops = slicecodec.common.ops_or_raise("gaussianpile")
    args = (ops, header["codec_header"], payload, vol.shape, torch.device("cpu"), None, "t")
    assert np.array_equal(slicecodec.render_volume(*args, slab=3), slicecodec.render_volume(*args, slab=32))
    with pytest.raises(VolbenchError):
        decode_roi(path, (0, 9, 0, 4, 0, 4), device="cpu")


def test_corrupt_and_truncated_files(encoded):
    vol, data, record, path, wd = encoded
    with pytest.raises(CorruptFile):
        decode_bytes(data[:-7], device="cpu")
    header, payload = container.unpack(data)
    with pytest.raises(CorruptFile, match="stream table"):
        decode_bytes(container.pack(header, payload[:-1]), device="cpu")  # valid CRC, short stream
    bad = bytearray(payload)
    bad[40] ^= 0x5A
    with pytest.raises(CorruptFile):
        decode_bytes(container.pack(header, bytes(bad)), device="cpu")
    h2 = dict(header, codec_header=dict(header["codec_header"], volume_model="cube"))
    with pytest.raises(CorruptFile, match="volume_model"):
        decode_bytes(container.pack(h2, payload), device="cpu")
    h3 = dict(header, codec_header={k: v for k, v in header["codec_header"].items() if k != "vmin"})
    with pytest.raises(CorruptFile, match="vmin"):
        decode_bytes(container.pack(h3, payload), device="cpu")


def test_noquant_variant_is_44_bytes_per_gaussian_and_deterministic(tmp_path):
    vol = blobs((6, 16, 16), seed=3)
    info = VolumeInfo(spacing=(1.0, 1.0, 1.0), seed=7, device="cpu", threads=1)
    p = dict(FAST, iterations=12, n_gaussians=60, max_gaussians=90, densify_from=4, densify_until=8,
             densify_interval=4, log_every=6, quantize=False)
    a = GaussianPile(**p).encode(vol, info)
    b = GaussianPile(**p).encode(vol, info)
    assert a.payload == b.payload and a.header == b.header
    n = a.header["n"]
    assert a.header["format"] == "raw" and len(a.payload) == 8 + 44 * n
    empty = container.pack(_full_header("gaussianpile", a.header, vol.shape, vol.dtype), b"")
    assert file_size(a, vol.shape, vol.dtype, "gaussianpile") == len(empty) + 8 + 44 * n
    # quantising the same Gaussians gives a smaller file and nearly the same volume
    q = GaussianPile(**dict(p, quantize=True)).encode(vol, info)
    assert len(q.payload) < len(a.payload)
    da = GaussianPile.decode(a.header, a.payload, vol.shape, np.float32)
    dq = GaussianPile.decode(q.header, q.payload, vol.shape, np.float32)
    assert np.abs(da - dq).max() < 0.02 * vol.max()


def test_sigma_z_and_presets():
    assert GaussianPile(preset="paper").params["iterations"] == 30_000
    assert GaussianPile(preset="paper").params["n_gaussians"] == 1_000_000
    pp = GaussianPile(preset="paper").params
    assert (pp["position_lr"], pp["opacity_lr"], pp["scale_lr"], pp["rotation_lr"]) == (6e-4, 2e-2, 2e-3, 1e-3)
    assert (pp["densify_from"], pp["densify_until"], pp["densify_grad_threshold"], pp["min_opacity"]) == \
        (500, 25_000, 5e-5, 0.02)
    assert pp["lambda_dssim"] == 0.2 and pp["lr_final_factor"] == 0.1 and pp["init"] == "random"
    assert GaussianPile(preset="paper", iterations=10_000).params["iterations"] == 10_000
    c = GaussianPile()
    assert c.sigma_z_physical(VolumeInfo(spacing=(3.0, 1.0, 1.0))) == 3.0
    assert c.sigma_z_physical(VolumeInfo(spacing=(3.0, 1.0, 1.0), sigma_z=1.5)) == 1.5
    assert GaussianPile(sigma_z=0.5).sigma_z_physical(VolumeInfo(spacing=(3.0, 1.0, 1.0), sigma_z=1.5)) == 0.5
    with pytest.raises(VolbenchError):
        GaussianPile(sigma_z=-1.0)
    with pytest.raises(VolbenchError):
        GaussianPile(position_bits=30)
    with pytest.raises(VolbenchError):
        GaussianPile(init="sphere")


def test_target_bpp_fits_budget():
    vol = blobs((6, 16, 16), seed=5)
    info = VolumeInfo(seed=0, device="cpu", threads=1)
    codec = GaussianPile(**dict(FAST, iterations=6, n_gaussians=400, max_gaussians=400, densify_from=2,
                                densify_until=4, densify_interval=2, log_every=3))
    target = 8.0  # 1536 bytes for 1536 voxels
    params, enc, report = codec.params_for_target(target, vol, info)
    size = file_size(enc, vol.shape, vol.dtype, "gaussianpile")
    assert size <= target * vol.size / 8
    assert report["realised_bpp"] == pytest.approx(8 * size / vol.size)
    assert enc.header["n"] <= params["max_gaussians"] == report["knob_value"]
    with pytest.raises(VolbenchError):
        codec.params_for_target(0.05, vol, info)


def test_target_ratio_solves_the_budget_from_the_compression_ratio():
    """target_ratio (seed 000 Table 2 reports compression ratios): the Gaussian budget comes from
    original bytes / ratio and the file format; training starts from init_fraction of it."""
    vol = blobs((8, 24, 24), seed=6).astype(np.uint16) * 200
    info = VolumeInfo(seed=0, device="cpu", threads=1)
    p = dict(FAST, iterations=8, densify_from=2, densify_until=6, densify_interval=2, log_every=4, init="data",
             target_ratio=6.0, init_fraction=0.5)
    codec = GaussianPile(**p)
    enc = codec.encode(vol, info)
    size = file_size(enc, vol.shape, vol.dtype, "gaussianpile")
    assert size <= vol.nbytes / 6.0
    n = codec.params["max_gaussians"]
    assert codec.params["n_gaussians"] == round(0.5 * n)
    assert 0 < enc.header["n"] <= n
    # the budget fills the file: one more Gaussian of the fixed-width estimate would not fit
    assert size + 2 * codec.bytes_per_gaussian() > 0.7 * vol.nbytes / 6.0
    with pytest.raises(VolbenchError):
        GaussianPile(target_ratio=0)
    with pytest.raises(VolbenchError):
        GaussianPile(init_fraction=1.5)


def test_stop_at_is_a_snapshot_of_the_longer_run(tmp_path):
    """Seed 000 Table 1's "iter=10k" is the 30k run stopped at 10k: stop_at keeps the schedules
    of `iterations` (learning-rate decay, densification) and stops early; stop_at = iterations is
    the full run, and the snapshot is not the shorter run with its own schedule."""
    vol = blobs((6, 16, 16), seed=3)
    p = dict(FAST, iterations=16, n_gaussians=60, max_gaussians=90, densify_from=4, densify_until=12,
             densify_interval=4, log_every=4)

    def enc(**kw):
        info = VolumeInfo(spacing=(1.0, 1.0, 1.0), seed=7, device="cpu", threads=1, workdir=tmp_path)
        return GaussianPile(**dict(p, **kw)).encode(vol, info)

    snap = enc(stop_at=8)
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert max(int(r["iteration"]) for r in rows) == 8
    short = enc(iterations=8, densify_until=6)
    assert snap.payload != short.payload
    assert enc(stop_at=16).payload == enc().payload
    with pytest.raises(VolbenchError, match="stop_at"):
        GaussianPile(**dict(p, stop_at=17))
