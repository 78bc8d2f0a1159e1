"""SIREN / COIN codec: training, exact file size, decoding from the file alone, damage, rate control.

Tiny volumes, CPU, one thread: the whole file runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

torch = pytest.importorskip("torch")

from volbench import container, history  # noqa: E402
from volbench.codecs import siren  # noqa: E402
from volbench.codecs.base import VolumeInfo, decode_bytes, encode_volume, get_codec  # noqa: E402
from volbench.errors import CorruptFile, VolbenchError  # noqa: E402
from volbench.torchenv import resolve_device  # noqa: E402
from decode_checks import decode_elsewhere  # noqa: E402

#: decoded PSNR (range-normalised) the tiny volume must reach after TINY_ITERS steps
TINY_PSNR_DB = 35.0
TINY_ITERS = 150
TINY = dict(preset="demo", width=32, depth=3, iterations=TINY_ITERS, batch_size=2048, lr=1e-3)


def smooth_volume(shape=(8, 16, 16), dtype=np.uint16):
    z, y, x = np.meshgrid(*[np.linspace(0.0, 1.0, n) for n in shape], indexing="ij")
    v = 1000 + 800 * np.sin(3 * x + 1) * np.cos(2 * y) * np.cos(1.5 * z + 0.3)
    v += 600 * np.exp(-((x - 0.5) ** 2 + (y - 0.4) ** 2 + (z - 0.5) ** 2) / 0.05)
    return np.rint(v).astype(dtype)


def psnr_range(ref, rec):
    ref = ref.astype(np.float64)
    mse = np.mean((ref - rec.astype(np.float64)) ** 2)
    return 10 * np.log10((ref.max() - ref.min()) ** 2 / mse)


def info(**kw):
    return VolumeInfo(name="tiny", seed=kw.pop("seed", 0), device="cpu", threads=1, **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    vol = smooth_volume()
    wd = tmp_path_factory.mktemp("siren")
    data, record = encode_volume("siren", TINY, vol, info(workdir=wd))
    return vol, data, record, wd


def test_registry_and_class_attributes():
    cls = get_codec("siren")
    assert cls is siren.SirenCodec and cls.uses_gpu and not cls.lossless
    assert "torch" in cls.versions()


def test_tiny_volume_trains_to_threshold(trained):
    vol, data, record, _ = trained
    rec, header = decode_bytes(data, "tiny.vbc", device="cpu")
    assert rec.shape == vol.shape and rec.dtype == vol.dtype
    p = psnr_range(vol, rec)
    assert p > TINY_PSNR_DB, f"PSNR {p:.2f} dB after {TINY_ITERS} iterations"
    assert header["codec_header"]["vmin"] == float(vol.min()) and header["codec_header"]["vmax"] == float(vol.max())


def test_encoder_reports_what_the_decoder_sees(trained, tmp_path):
    vol, data, _, _ = trained
    codec = siren.SirenCodec(**TINY)
    enc = codec.encode(vol, info())
    rec = siren.SirenCodec.decode(enc.header, enc.payload, vol.shape, vol.dtype, device="cpu")
    assert codec.last_report["decoded_psnr_db"] == pytest.approx(psnr_range(vol, rec), abs=1e-9)
    # deterministic on CPU: the same seed gives the same bytes as the fixture's encode
    header, payload = container.unpack(data)
    assert enc.payload == payload and enc.header == header["codec_header"]


def test_history_csv(trained):
    *_, wd = trained
    rows = list(csv.DictReader(open(wd / "history.csv")))
    assert tuple(rows[0]) == history.COLUMNS  # the one schema of every training codec
    train = [r for r in rows if r["stage"] == "train"]
    assert [int(r["iteration"]) for r in train] == list(range(1, TINY_ITERS + 1))
    assert float(train[-1]["psnr"]) > float(train[0]["psnr"]) + 10
    assert float(train[-1]["mse"]) == pytest.approx(float(train[-1]["loss"]) / 4)
    assert rows[-1]["stage"] == "decoded_file" and float(rows[-1]["psnr"]) > TINY_PSNR_DB
    assert rows[-1]["n_gaussians"] == ""
    secs = [float(r["seconds"]) for r in rows]
    assert secs == sorted(secs)


def test_file_size_is_container_header_and_parameters(trained):
    vol, data, record, _ = trained
    hlen = struct.unpack_from("<8sHI", data, 0)[2]
    width, depth = TINY["width"], TINY["depth"]
    n_params = (3 * width + width) + (depth - 1) * (width * width + width) + (width + 1)
    overhead = 8 + 2 + 4 + 8 + 4  # magic, version, header length, payload length, crc32
    assert len(data) == overhead + hlen + 2 * n_params == record["bytes"]
    header = json.loads(data[14:14 + hlen])
    assert set(header["codec_header"]) == {"v", "width", "depth", "weight_bits", "vmin", "vmax"}
    assert siren.container_bytes(header["codec_header"], vol.shape, vol.dtype, width, depth, 16) == len(data)
    # the paper network: [256, 256, 256, 256, 1] -> 198,657 parameters, 397,314 bytes of float16
    assert siren.n_parameters(256, 4) == 198_657
    assert siren.payload_bytes(256, 4, 16) == 397_314


def test_decode_in_fresh_process_matches(trained, tmp_path):
    """Same machine, same thread count, same decode batches: the same bytes (docs/reproducibility.md)."""
    vol, data, _, _ = trained
    f = tmp_path / "tiny.vbc"
    f.write_bytes(data)
    out = tmp_path / "rec.npy"
    code = ("import sys, numpy as np, torch; torch.set_num_threads(int(sys.argv[3])); "
            "from volbench.codecs.base import decode_file; "
            "a, _ = decode_file(sys.argv[1], device='cpu'); np.save(sys.argv[2], a)")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow")}
    subprocess.run([sys.executable, "-c", code, str(f), str(out), str(torch.get_num_threads())],
                   check=True, env=env, timeout=120)
    fresh = np.load(out)
    here, _ = decode_bytes(data, device="cpu")
    assert fresh.dtype == here.dtype and np.array_equal(fresh, here)


def test_decode_elsewhere_within_the_stated_bound(trained, tmp_path):
    """Another SIMD path and thread count, or other decode batches, move a voxel by at most one
    grey level (integer volumes) and 1e-5 of the range (float volumes): docs/reproducibility.md."""
    vol, data, _, _ = trained
    f = tmp_path / "tiny.vbc"
    f.write_bytes(data)
    here, _ = decode_bytes(data, device="cpu")
    there = decode_elsewhere(f, tmp_path / "rec.npy", threads=1)
    assert there.dtype == here.dtype
    assert np.abs(there.astype(np.int64) - here.astype(np.int64)).max() <= 1
    header, payload = container.unpack(data)
    h = header["codec_header"]
    width, depth, bits, vmin, vmax = siren._parse_header(h)
    tensors = siren.unpack_weights(payload, width, depth, bits)
    cpu = torch.device("cpu")
    for dtype, bound in ((vol.dtype, 1.0), (np.float32, 1e-5 * (vmax - vmin))):
        ref = siren.evaluate_grid(tensors, vol.shape, vmin, vmax, dtype, cpu)
        odd = siren.evaluate_grid(tensors, vol.shape, vmin, vmax, dtype, cpu, batch_size=333)
        assert np.abs(odd.astype(np.float64) - ref.astype(np.float64)).max() <= bound


def test_damaged_files_give_clear_errors(trained):
    _, data, _, _ = trained
    with pytest.raises(CorruptFile, match="truncated payload"):
        decode_bytes(data[:-10], "tiny.vbc")
    header, payload = container.unpack(data)
    ch, shape = header["codec_header"], tuple(header["shape"])
    with pytest.raises(CorruptFile, match="truncated or damaged"):
        siren.SirenCodec.decode(ch, payload[:-2], shape, np.uint16, device="cpu")
    with pytest.raises(CorruptFile, match="truncated or damaged"):
        siren.SirenCodec.decode({**ch, "width": ch["width"] + 1}, payload, shape, np.uint16, device="cpu")
    with pytest.raises(CorruptFile, match="header is damaged"):
        siren.SirenCodec.decode({k: v for k, v in ch.items() if k != "depth"}, payload, shape, np.uint16)
    bad = bytearray(payload)
    bad[0:2] = b"\x00\x7c"  # float16 +inf as the first weight
    with pytest.raises(CorruptFile, match="non-finite"):
        siren.SirenCodec.decode(ch, bytes(bad), shape, np.uint16, device="cpu")
    # a flipped payload byte inside a complete file is caught by the container checksum
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF
    with pytest.raises(CorruptFile, match="checksum"):
        decode_bytes(bytes(flipped), "tiny.vbc")


def test_8bit_weights(trained):
    vol, data16, _, _ = trained
    data8, rec8 = encode_volume("siren", {**TINY, "weight_bits": 8}, vol, info())
    width, depth = TINY["width"], TINY["depth"]
    n_params = siren.n_parameters(width, depth)
    n_tensors = 2 * (depth + 1)
    hlen = struct.unpack_from("<8sHI", data8, 0)[2]
    assert len(data8) == 26 + hlen + n_params + 8 * n_tensors  # codes + float32 offset/step per tensor
    out8, _ = decode_bytes(data8, device="cpu")
    out16, _ = decode_bytes(data16, device="cpu")
    p8, p16 = psnr_range(vol, out8), psnr_range(vol, out16)
    assert p8 > 28.0 and p8 < p16  # same training (same seed), coarser weights
    assert not np.array_equal(out8, out16)


def test_target_bpp_lands_within_5_percent():
    vol = smooth_volume((16, 32, 32))
    params = {**TINY, "iterations": 3}
    for target, bits in ((8.0, 16), (2.0, 8)):
        data, record = encode_volume("siren", {**params, "weight_bits": bits, "target_bpp": target}, vol, info())
        realised = 8 * len(data) / vol.size
        rc = record["rate_control"]
        assert rc["realised_bpp"] == pytest.approx(realised)
        assert abs(realised - target) <= 0.05 * target and rc["hit"], rc
        assert rc["predicted_bytes"] == len(data) and rc["trials"] == 1
        assert record["params"]["width"] == rc["knob_value"] > 8


def test_foreground_sampling_helps_sparse_signal():
    z, y, x = np.meshgrid(*[np.arange(n) for n in (8, 16, 16)], indexing="ij")
    vol = (1000 * np.exp(-((z - 4) ** 2 + (y - 8) ** 2 + (x - 5) ** 2) / 3.0)).astype(np.uint16)
    fg = vol > 0.01 * vol.max()
    assert 0.01 < fg.mean() < 0.2
    errs = {}
    for frac in (0.0, 0.75):
        codec = siren.SirenCodec(**{**TINY, "iterations": 60, "batch_size": 256, "foreground_fraction": frac})
        enc = codec.encode(vol, info())
        rec = siren.SirenCodec.decode(enc.header, enc.payload, vol.shape, vol.dtype, device="cpu")
        errs[frac] = np.mean((rec[fg].astype(float) - vol[fg]) ** 2)
    assert errs[0.75] < errs[0.0]


def test_seed_changes_the_result():
    vol = smooth_volume()
    a = siren.SirenCodec(**{**TINY, "iterations": 5, "verify": False}).encode(vol, info(seed=1))
    b = siren.SirenCodec(**{**TINY, "iterations": 5, "verify": False}).encode(vol, info(seed=2))
    assert a.payload != b.payload and len(a.payload) == len(b.payload)


def test_presets_and_parameter_checks():
    p = siren.SirenCodec().params
    assert (p["width"], p["depth"], p["iterations"], p["weight_bits"]) == (256, 4, 10_000, 16)
    d = siren.SirenCodec(preset="demo", width=20).params
    assert d["width"] == 20 and d["depth"] == siren.PRESETS["demo"]["depth"]
    for bad in ({"preset": "huge"}, {"weight_bits": 4}, {"foreground_fraction": 2}, {"width": 0}, {"colour": 1}):
        with pytest.raises(VolbenchError):
            siren.SirenCodec(**bad)


def test_float_volume_roundtrip_dtype():
    vol = smooth_volume((4, 8, 8)).astype(np.float32) / 7.0
    data, _ = encode_volume("siren", {**TINY, "iterations": 20}, vol, info())
    rec, _ = decode_bytes(data, device="cpu")
    assert rec.dtype == np.float32 and rec.min() >= vol.min() and rec.max() <= vol.max()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_requested_without_gpu():
    vol = smooth_volume((2, 4, 4))
    with pytest.raises(VolbenchError, match="CUDA is not available"):
        siren.SirenCodec(**TINY).encode(vol, VolumeInfo(device="cuda"))
    assert resolve_device("auto").type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_encode_and_decode_agree_with_cpu():
    vol = smooth_volume()
    codec = siren.SirenCodec(**TINY)
    enc = codec.encode(vol, VolumeInfo(device="auto", seed=0))
    assert codec.last_report["device"].startswith("cuda")
    gpu = siren.SirenCodec.decode(enc.header, enc.payload, vol.shape, vol.dtype, device="cuda")
    cpu = siren.SirenCodec.decode(enc.header, enc.payload, vol.shape, vol.dtype, device="cpu")
    assert np.max(np.abs(gpu.astype(int) - cpu.astype(int))) <= 1
    assert psnr_range(vol, gpu) > TINY_PSNR_DB
