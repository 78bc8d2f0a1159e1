"""Slice-adapted 3DGS baseline (seed 000 sec. 10): interior grid initialisation, slice training
without the focus model, GaussianPile's file format, decode = the Gaussians voxelized as they are."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from volbench import container  # noqa: E402
from volbench.codecs.base import VolumeInfo, decode_bytes, encode_volume  # noqa: E402
from volbench.codecs.gs3d_slice import GS3DSlice, decode_roi  # noqa: E402
from decode_checks import assert_rois_are_crops, decode_elsewhere  # noqa: E402
from volbench.errors import CorruptFile, VolbenchError  # noqa: E402
from volbench.gaussian_training import fileformat, slicefit  # noqa: E402
from volbench.codecs._gaussian import render_slices  # noqa: E402
from volbench.gaussian_ops import ops  # noqa: E402
from volbench.metrics import psnr_3d as psnr  # noqa: E402
from volumes import blobs  # noqa: E402

WORKFLOW = Path(__file__).resolve().parents[1] / "workflow"

FAST = dict(iterations=50, n_gaussians=250, max_gaussians=400, densify_from=20, densify_until=40,
            densify_interval=10, log_every=25, eval_slices=4, progress=False)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    vol = blobs()
    wd = tmp_path_factory.mktemp("gs")
    info = VolumeInfo(name="blobs", spacing=(2.0, 1.0, 1.0), seed=1, device="cpu", threads=2, workdir=wd)
    data, record = encode_volume("gs3d_slice", FAST, vol, info)
    path = wd / "v.vbc"
    path.write_bytes(data)
    return vol, data, path


def test_trains_on_slices_and_decodes_the_gaussians(encoded):
    vol, data, path = encoded
    peak = float(vol.max())
    rendered = render_slices(path, "gs3d_slice", device="cpu")
    base = psnr(np.zeros_like(vol), vol, peak)
    assert psnr(rendered, vol, peak) > base + 3.5  # 2D: the rendered slices fit (19.3 vs 14.4 dB measured)
    out, header = decode_bytes(data, device="cpu")
    ch = header["codec_header"]
    assert ch["format"] == "quantised" and ch["mode"] == "3dgs" and ch["volume_model"] == "gaussian"
    # decode = ops.voxelize of the stored Gaussians, amplitude = opacity (seed 000 eq. 12)
    _, payload = container.unpack(data)
    g = fileformat.unpack_gaussians(ch, payload)
    t = {k: torch.from_numpy(v) for k, v in g.items()}
    vox = ops.voxelize(t["means"], t["log_scales"], t["quats"], t["opacity"], vol.shape,
                       spacing=tuple(ch["spacing_w"]), cutoff=ch["cutoff"]).numpy()
    expect = np.clip(np.rint(vox.astype(np.float64) * (ch["vmax"] - ch["vmin"]) + ch["vmin"]), 0, 255)
    assert np.abs(expect - out).max() <= 1
    assert np.isfinite(psnr(out, vol, peak))


def test_grid_init_fills_the_interior():
    vol = np.zeros((10, 30, 30), np.float32)
    vol[2:8, 5:25, 10:20] = 0.8
    gen = torch.Generator().manual_seed(0)
    p = dict(init_threshold=0.05, init_opacity=0.5, min_init_scale=0.3)
    init = slicefit.init_grid(vol, (2.0, 1.0, 1.0), 100, p, gen)
    idx = np.rint(init["means"].numpy() / np.array([2.0, 1.0, 1.0])).astype(int)
    assert 1 <= len(idx) <= 100
    assert np.all(vol[tuple(idx.T)] > 0.05)  # every Gaussian starts inside the object
    assert len(np.unique(idx[:, 0])) >= 2 and len(np.unique(idx[:, 2])) >= 2  # spread over a grid
    op = torch.sigmoid(init["opacity"])
    assert torch.allclose(op, torch.full_like(op, 0.5), atol=1e-4)  # voxel value / max x init_opacity


def test_decode_fresh_process_roi_and_errors(encoded, tmp_path):
    vol, data, path = encoded
    here, _ = decode_bytes(data, device="cpu")
    # another SIMD path (torch's scalar kernels) and thread count give the same voxels
    assert np.array_equal(decode_elsewhere(path, tmp_path / "out.npy", threads=1), here)
    assert_rois_are_crops(decode_roi, path, here)
    with pytest.raises(VolbenchError):
        decode_roi(path, (3, 3, 0, 4, 0, 4), device="cpu")
    with pytest.raises(CorruptFile):
        decode_bytes(data[: len(data) // 2], device="cpu")
    header, payload = container.unpack(data)
    with pytest.raises(CorruptFile):
        decode_bytes(container.pack(header, payload[:-2]), device="cpu")
    with pytest.raises(CorruptFile, match="gaussianpile"):
        render_slices(data, "gaussianpile")


def test_deterministic_and_presets():
    vol = blobs((6, 16, 16), seed=2)
    info = VolumeInfo(seed=4, device="cpu", threads=1)
    p = dict(FAST, iterations=10, n_gaussians=60, max_gaussians=90, densify_from=4, densify_until=8,
             densify_interval=4, log_every=5)
    a = GS3DSlice(**p).encode(vol, info)
    b = GS3DSlice(**p).encode(vol, info)
    assert a.payload == b.payload and a.header == b.header
    pp = GS3DSlice(preset="paper").params
    assert pp["init"] == "grid" and pp["init_calibrate"] and pp["iterations"] == 30_000 and pp["lambda_dssim"] == 0.2
    assert GS3DSlice(quantize=False).bytes_per_gaussian() == 44.0
    with pytest.raises(VolbenchError):
        GS3DSlice(quantize="yes")


def test_score_takes_the_2d_metrics_from_the_rendered_slices(encoded, tmp_path):
    """Seed 000 measures 2D PSNR/SSIM on rendered slices: the score job renders them from the
    compressed file alone; 3D metrics (and LPIPS) stay on the decoded volume."""
    from volbench import io, metrics, pipeline

    vol, data, path = encoded
    enc, dec = tmp_path / "enc", tmp_path / "dec"
    enc.mkdir()
    dec.mkdir()
    (enc / pipeline.VBC).write_bytes(data)
    io.write_json(enc / "encode.json", {"status": "ok", "params": FAST})
    out, _ = decode_bytes(data, device="cpu")
    io.write_volume(dec / "volume.tif", out)
    io.write_json(dec / "decode.json", {"status": "ok", "decode_seconds": 1.0})
    io.write_volume(tmp_path / "orig.tif", vol)
    io.write_json(tmp_path / "meta.json", {"original_bytes": vol.nbytes, "n_voxels": vol.size})
    cell = {"dataset": "blobs", "codec": "gs3d_slice", "point": "p", "codec_type": "gs3d_slice"}
    row = pipeline.score_cell(tmp_path / "orig.tif", tmp_path / "meta.json", dec, enc, cell=cell,
                              lpips_cfg={"enabled": False}, foreground_threshold=0.01)
    R = float(vol.max()) - float(vol.min())
    rendered = render_slices(path, "gs3d_slice", device="cpu")
    want = metrics.slice_metrics_2d(vol, rendered, R)
    on_volume = metrics.compute(vol, out, lpips=False)
    assert row["metrics_2d_source"] == "rendered slices"
    assert row["psnr_2d"] == want["psnr_2d"] and row["ssim_2d"] == want["ssim_2d"]
    assert abs(row["psnr_2d"] - on_volume["psnr_2d"]) > 0.5  # the voxelised volume is not what it renders
    assert row["psnr_3d"] == on_volume["psnr_3d"] and row["ssim_3d"] == pytest.approx(on_volume["ssim_3d"])
    # a volume codec keeps the decoded volume's slices
    cell2 = dict(cell, codec="zstd", codec_type="zstd")
    row2 = pipeline.score_cell(tmp_path / "orig.tif", tmp_path / "meta.json", dec, enc, cell=cell2,
                               lpips_cfg={"enabled": False}, foreground_threshold=0.01)
    assert row2["metrics_2d_source"] == "decoded volume" and row2["psnr_2d"] == on_volume["psnr_2d"]
