"""VolMicro codec: training quality, the 22-byte file layout, decode paths, errors, rate control."""

from __future__ import annotations

import math

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
from volbench.codecs import volmicro as volmicro_mod  # noqa: E402
from volbench.codecs.volmicro import VolMicro, decode_roi  # noqa: E402
from volbench.errors import CorruptFile, VolbenchError  # noqa: E402
from volbench.gaussian_training import gate as gate_mod  # noqa: E402
from volbench.gaussian_training import losses, volfit  # noqa: E402
from volbench.gaussian_training.gset import GaussianSet  # noqa: E402
from volbench.metrics import psnr_3d as psnr  # noqa: E402
from decode_checks import assert_rois_are_crops, decode_elsewhere  # noqa: E402
from volumes import blobs as _blobs  # noqa: E402

WORKFLOW = Path(__file__).resolve().parents[1] / "workflow"

# tiny and fast: the CPU twin of the operators on 2 shared cores
FAST = dict(iterations=40, n_gaussians=150, max_gaussians=260, gate="threshold", densify_from=10,
            densify_until=30, densify_interval=10, log_every=10, progress=False, init="occupied")


def blobs(shape=(16, 32, 32), seed=0, peak=60000):
    return _blobs(shape, seed, peak, count=3, max_sigma=3.5, dtype=np.uint16)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    vol = blobs()
    wd = tmp_path_factory.mktemp("vm")
    info = VolumeInfo(name="blobs", spacing=(1.0, 1.0, 1.0), seed=3, device="cpu", threads=2, workdir=wd)
    data, record = encode_volume("volmicro", FAST, vol, info)
    path = wd / "blobs.vbc"
    path.write_bytes(data)
    return vol, data, record, path, wd


def test_trains_to_psnr_and_file_is_header_plus_22n(encoded):
    vol, data, record, path, wd = encoded
    out, header = decode_bytes(data, device="cpu")
    assert out.shape == vol.shape and out.dtype == vol.dtype
    peak = float(vol.max())
    base = psnr(np.zeros_like(vol), vol, peak)  # an empty reconstruction
    got = psnr(out, vol, peak)
    assert got > 27.0 and got > base + 8.0, (got, base)
    n = header["codec_header"]["n"]
    assert 1 <= n <= FAST["max_gaussians"]
    empty = container.pack(_full_header("volmicro", header["codec_header"], vol.shape, vol.dtype), b"")
    assert len(data) == len(empty) + 22 * n
    # the history: one row per log point, the last one of the decoded file
    rows = list(csv.DictReader(open(wd / "history.csv")))
    assert {"iteration", "loss", "psnr", "mse", "n_gaussians", "seconds"} <= set(rows[0])
    assert rows[-1]["stage"] == "decoded_file"
    assert abs(float(rows[-1]["psnr"]) - psnr(out / peak, vol / peak, 1.0)) < 0.2
    assert float(rows[-2]["psnr"]) > float(rows[0]["psnr"]) + 5  # training improved


def test_decode_elsewhere_is_bit_identical(encoded, tmp_path):
    """Another SIMD path (torch's scalar kernels) and thread count give the same voxels."""
    vol, data, record, path, wd = encoded
    here, _ = decode_bytes(data, device="cpu")
    assert np.array_equal(decode_elsewhere(path, tmp_path / "out.npy", threads=1), here)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert np.array_equal(decode_bytes(data, device="cpu")[0], here)
    finally:
        torch.set_num_threads(old)


def test_roi_decode_equals_crop(encoded):
    vol, data, record, path, wd = encoded
    full, _ = decode_bytes(data, device="cpu")
    assert_rois_are_crops(decode_roi, path, full)
    assert_rois_are_crops(decode_roi, data, full)
    # z-slabs that do not divide the depth give the same values
    chead, payload = container.unpack(data)[0]["codec_header"], container.unpack(data)[1]
    ops = volmicro_mod.common.ops_or_raise("volmicro")
    a = VolMicro.render(ops, chead, payload, vol.shape, torch.device("cpu"), None, "t", slab=5)
    b = VolMicro.render(ops, chead, payload, vol.shape, torch.device("cpu"), None, "t", slab=32)
    assert np.array_equal(a, b)
    with pytest.raises(VolbenchError):
        decode_roi(path, (0, 17, 0, 4, 0, 4), device="cpu")


def test_corrupt_and_truncated_files(encoded):
    vol, data, record, path, wd = encoded
    with pytest.raises(CorruptFile):
        decode_bytes(data[:-5], device="cpu")  # the container's length/CRC check
    header, payload = container.unpack(data)
    # a payload one Gaussian short, with a valid CRC: our own length check must catch it
    bad = container.pack(header, payload[:-22])
    with pytest.raises(CorruptFile, match="22 x"):
        decode_bytes(bad, device="cpu")
    # non-finite float16 values
    arr = bytearray(payload)
    arr[0:2] = np.array([np.inf], dtype="<f2").tobytes()
    with pytest.raises(CorruptFile, match="non-finite"):
        decode_bytes(container.pack(header, bytes(arr)), device="cpu")
    h2 = dict(header, codec_header=dict(header["codec_header"], format="f32"))
    with pytest.raises(CorruptFile):
        decode_bytes(container.pack(h2, payload), device="cpu")


def test_deterministic_on_cpu():
    vol = blobs((8, 16, 16), seed=1)
    info = VolumeInfo(seed=5, device="cpu", threads=1)
    p = dict(FAST, iterations=12, n_gaussians=40, max_gaussians=60, densify_from=4, densify_until=8,
             densify_interval=4, gate="mlp", gate_iterations=20, gate_batch=256)
    a = VolMicro(**p).encode(vol, info)
    b = VolMicro(**p).encode(vol, info)
    assert a.payload == b.payload and a.header == b.header


def test_target_bpp_solves_budget():
    vol = blobs((8, 16, 16), seed=2)
    info = VolumeInfo(seed=0, device="cpu", threads=1)
    codec = VolMicro(**dict(FAST, iterations=8, n_gaussians=500, densify_from=4, densify_until=6,
                            densify_interval=2))
    target = 4.0  # bits per voxel -> 1024 bytes for 2048 voxels
    params, enc, report = codec.params_for_target(target, vol, info)
    size = file_size(enc, vol.shape, vol.dtype, "volmicro")
    assert size <= target * vol.size / 8
    n = report["knob_value"]
    assert params["final_gaussians"] == n and params["max_gaussians"] == math.ceil(n * 28_547 / 20_693)
    assert enc.header["n"] <= n
    assert report["realised_bpp"] == pytest.approx(8 * size / vol.size)
    # the budget leaves less than one Gaussian unused
    over = file_size(type(enc)(enc.header, b""), vol.shape, vol.dtype, "volmicro")
    assert 0 <= target * vol.size / 8 - (over + 22 * n) < 22
    with pytest.raises(VolbenchError):
        codec.params_for_target(0.01, vol, info)


def test_budget_caps_the_final_count_not_the_peak(tmp_path):
    """Seed 001: densification peaks above the final count (28.5k vs 20.7k); with a byte budget
    of n Gaussians, training may grow to 1.38 n and Phase III prunes to n after densify_until."""
    import csv

    vol = blobs((8, 16, 16), seed=2)
    info = VolumeInfo(seed=0, device="cpu", threads=1, workdir=tmp_path)
    ratio = 10.0  # 409 bytes for 4096 original bytes
    codec = VolMicro(**dict(FAST, iterations=24, n_gaussians=10, densify_from=4, densify_until=12,
                            densify_interval=4, grad_threshold=0.0, target_ratio=ratio))
    enc = codec.encode(vol, info)
    n = codec.params["final_gaussians"]
    assert n and codec.params["max_gaussians"] > n
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    counts = {int(r["iteration"]): int(r["n_gaussians"]) for r in rows if r.get("stage", "train") == "train"}
    assert max(c for it, c in counts.items() if it <= 12) > n  # the peak passes the budget
    assert all(c == n for it, c in counts.items() if it > 12)  # Phase III: pruned to it
    assert enc.header["n"] == n
    assert file_size(enc, vol.shape, vol.dtype, "volmicro") <= vol.nbytes / ratio


def test_presets_and_params():
    assert VolMicro(preset="paper").params["iterations"] == 10_000
    assert VolMicro(preset="paper", iterations=7).params["iterations"] == 7
    assert VolMicro().params["iterations"] == 400
    assert VolMicro.uses_gpu
    with pytest.raises(VolbenchError):
        VolMicro(gate="knn")
    with pytest.raises(VolbenchError):
        VolMicro(preset="fast")


def test_edge_weights_central_differences():
    v = np.zeros((5, 5, 5), np.float32)
    v[:, :, 2:] = 1.0  # a step along x
    w = losses.edge_weights(v, 1.0, 2.0)
    assert w.min() == pytest.approx(1.0) and w.max() == pytest.approx(3.0)
    assert np.allclose(w[:, :, 1], 3.0) and np.allclose(w[:, :, 2], 3.0) and np.allclose(w[:, :, 4], 1.0)
    ramp = np.broadcast_to(np.arange(6, dtype=np.float32) ** 2, (4, 4, 6)).copy()
    w = losses.edge_weights(ramp, 1.0, 2.0)
    # central difference at x=2 is (9 - 1) / 2 = 4; the maximum is the one-sided 25 - 16 = 9 at x=5
    assert w[0, 0, 2] == pytest.approx(1 + 2 * 4 / 9)


def test_gate_learns_occupancy():
    vol = blobs((8, 16, 16), seed=4) / 60000.0
    t = torch.from_numpy(vol.astype(np.float32))
    gen = torch.Generator().manual_seed(0)
    params = dict(tau_occ=0.01, gate_iterations=150, gate_lr=1e-2, gate_batch=2048, gate_bands=4, gate_hidden=64,
                  gate_tau=0.5)
    mask, stats = gate_mod.occupancy_mask("mlp", t, params, gen)
    labels = t > 0.01
    agree = float((mask == labels).float().mean())
    assert agree > 0.85, agree
    assert stats["gate_parameters"] == (27 * 64 + 64) + 2 * (64 * 64 + 64) + 65
    thr, _ = gate_mod.occupancy_mask("threshold", t, params, gen)
    assert torch.equal(thr, labels)
    assert bool(gate_mod.occupancy_mask("none", t, params, gen)[0].all())


def test_densify_clone_split_prune():
    p = dict(grad_threshold=1e-4, size_threshold=0.02, max_gaussians=100, clone_std=0.01, split_offset=0.25,
             split_factor=0.8, prune_threshold=1e-3, s_max=0.1,
             _extent=torch.tensor([10.0, 10.0, 10.0]), _L=10.0)
    pos = torch.tensor([[0.5, 0.5, 0.5], [0.3, 0.3, 0.3], [0.7, 0.7, 0.7], [0.2, 0.8, 0.5]])
    scale = torch.tensor([[0.01] * 3, [0.05, 0.01, 0.01], [0.01] * 3, [0.2, 0.01, 0.01]])
    inten = torch.tensor([0.5, 0.5, 0.0001, 0.5])
    quat = torch.tensor([[1.0, 0, 0, 0]] * 4)
    gs = GaussianSet({"pos": volfit._logit(pos), "scale": volfit._inv_softplus(scale), "quat": quat,
                      "intensity": volfit._logit(inten)}, {k: 0.01 for k in ("pos", "scale", "quat", "intensity")})
    ema = torch.tensor([1e-3, 1e-3, 0.0, 0.0])  # 0 is small and hot (clone), 1 large and hot (split)
    gen = torch.Generator().manual_seed(0)
    ema, ev = volfit._densify(gs, ema, p, gen)
    assert ev == {"cloned": 1, "split": 1} and gs.n == 6 and len(ema) == 6
    P, S, _, _ = volfit._activated(gs)
    children = P[-2:]
    # split children at mu +- R (0.25 s) along the large (z) axis, scale x 0.8
    assert torch.allclose(children[:, 0], torch.tensor([0.3 + 0.25 * 0.05, 0.3 - 0.25 * 0.05]), atol=1e-4)
    assert torch.allclose(S[-1], torch.tensor([0.04, 0.008, 0.008]), atol=1e-5)
    ema, k = volfit._prune(gs, ema, p)
    assert k == 2  # the faint one and the oversized one
    assert gs.n == 4
    # Adam moments follow the rows
    loss = sum(v.sum() for v in gs.params.values())
    loss.backward()
    gs.opt.step()
    assert all(gs.opt.state[v]["exp_avg"].shape == v.shape for v in gs.params.values())
