"""HEVC codec (x265 via ffmpeg): round trips, lossless, rate monotonicity, fresh-process decode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from volbench.codecs import hevc
from volbench.codecs.base import VolumeInfo, decode_bytes, encode_volume, get_codec
from volbench.errors import CodecUnavailable, CorruptFile, VolbenchError
from volbench.metrics import psnr_3d as psnr  # noqa: E402

WORKFLOW = Path(__file__).resolve().parents[1] / "workflow"
INFO = VolumeInfo(name="synthetic", threads=1)
FAST = {"preset": "ultrafast"}


def synthetic(shape, dtype=np.uint16, lo=0, hi=4000, seed=0, noise=0.01):
    """Smooth Gaussian blobs plus a little noise, scaled to lo..hi."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    f = np.zeros(shape)
    for _ in range(6):
        c = rng.uniform(0, 1, 3)
        s = rng.uniform(0.1, 0.35)
        f += rng.uniform(0.3, 1) * np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / (2 * s * s))
    f += noise * rng.standard_normal(shape)
    f = (f - f.min()) / (f.max() - f.min())
    return np.rint(lo + f * (hi - lo)).astype(dtype)


def roundtrip(vol, **params):
    data, record = encode_volume("hevc", {**FAST, **params}, vol, INFO)
    out, _ = decode_bytes(data)
    assert out.shape == vol.shape and out.dtype == vol.dtype
    assert record["bytes"] == len(data)
    return data, out


def test_registered_and_available():
    assert get_codec("hevc") is hevc.HEVC
    hevc.HEVC.check_available()
    v = hevc.HEVC.versions()
    assert v["ffmpeg"] != "unknown" and v["x265"] != "unknown"


@pytest.mark.parametrize("shape", [(7, 33, 45), (4, 64, 64), (1, 16, 17), (3, 70, 9)])
@pytest.mark.parametrize("dtype,peak", [(np.uint8, 255), (np.uint16, 4000)])
def test_lossy_roundtrip_shapes(shape, dtype, peak):
    vol = synthetic(shape, dtype, hi=peak)
    _, out = roundtrip(vol, crf=18)
    # measured 38.2-39.4 dB for these volumes (ultrafast, crf 18)
    assert psnr(vol, out, peak) > 35.0


def test_lossy_16bit_full_range():
    vol = synthetic((5, 40, 48), np.uint16, hi=60000)
    data, out = roundtrip(vol, crf=10)
    assert decode_bytes(data)[1]["codec_header"]["transform"]["kind"] == "scale"
    assert psnr(vol, out, 60000) > 40.0


@pytest.mark.parametrize("dtype,lo,hi,kind", [
    (np.uint8, 0, 255, None),
    (np.uint16, 0, 4095, "identity"),
    (np.uint16, 20000, 24095, "offset"),  # 12-bit range away from zero: exact by offset
    (np.int16, -3000, 1000, "offset"),
])
def test_lossless_bit_exact(dtype, lo, hi, kind):
    vol = synthetic((6, 33, 45), dtype, lo=lo, hi=hi, noise=0.05)
    assert vol.min() == lo and vol.max() == hi
    data, out = roundtrip(vol, lossless=True)
    np.testing.assert_array_equal(out, vol)
    assert (decode_bytes(data)[1]["codec_header"]["transform"] or {}).get("kind") == kind


@pytest.mark.parametrize("dtype,lo,hi,kind", [
    (np.uint16, 0, 65535, "scale"), (np.uint16, 20000, 24095, "offset"), (np.int16, -32768, 32767, "scale"),
    (np.int16, -3000, 1000, "offset"), (np.int32, -10**6, 10**6, "scale"),
])
def test_sample_mapping_matches_formula(dtype, lo, hi, kind):
    # volumes above 65536 voxels go through the lookup-table path: it must equal the documented formula
    rng = np.random.default_rng(3)
    vol = rng.integers(lo, hi, (5, 128, 128), endpoint=True).astype(dtype)
    vol.flat[:2] = lo, hi
    mapped, t = hevc.to_12bit(vol)
    assert t["kind"] == kind and mapped.dtype == np.uint16
    scale = (hi - lo) / 4095 if kind == "scale" else 1.0
    want = np.clip(np.rint((vol.astype(np.float64) - lo) / scale), 0, 4095).astype(np.uint16)
    np.testing.assert_array_equal(mapped, want)
    coded = rng.integers(0, 4096, vol.shape).astype(np.uint16)  # any decoded 12-bit samples
    back = hevc.from_12bit(coded, t, dtype)
    lim = np.iinfo(dtype)
    np.testing.assert_array_equal(back, np.clip(np.rint(coded * scale + lo), lim.min, lim.max).astype(dtype))
    if kind == "offset":
        np.testing.assert_array_equal(hevc.from_12bit(mapped, t, dtype), vol)


def test_lossless_wide_range_is_bounded_not_exact():
    vol = synthetic((3, 32, 32), np.uint16, hi=65535, noise=0.05)
    data, out = roundtrip(vol, lossless=True)
    t = decode_bytes(data)[1]["codec_header"]["transform"]
    assert t["kind"] == "scale" and not t["exact"]
    assert np.abs(out.astype(np.int64) - vol).max() <= t["scale"] / 2 + 1


def test_size_falls_as_crf_rises():
    vol = synthetic((6, 48, 64), np.uint16, hi=4000, noise=0.02)
    sizes = [len(encode_volume("hevc", {**FAST, "crf": c}, vol, INFO)[0]) for c in (5, 20, 35, 50)]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 4, sizes


def test_intra_and_deterministic():
    vol = synthetic((5, 33, 45), np.uint8, hi=255, noise=0.02)
    a = encode_volume("hevc", {**FAST, "crf": 25}, vol, INFO)[0]
    b = encode_volume("hevc", {**FAST, "crf": 25}, vol, INFO)[0]
    assert a == b
    # x265's thread pool size (the job's threads) does not change the bitstream
    c = encode_volume("hevc", {**FAST, "crf": 25}, vol, VolumeInfo(name="synthetic", threads=3))[0]
    assert c == a
    data, out = roundtrip(vol, crf=25, intra=True)
    assert data != a
    assert psnr(vol, out, 255) > 30


def test_x265_params_are_passed():
    vol = synthetic((3, 20, 20), np.uint8, hi=255)
    plain = encode_volume("hevc", {**FAST, "crf": 30}, vol, INFO)[0]
    # constant QP 51 via x265_params overrides crf: a much smaller file
    forced = encode_volume("hevc", {**FAST, "crf": 30, "x265_params": "qp=51"}, vol, INFO)[0]
    assert len(forced) < len(plain)
    with pytest.raises(VolbenchError, match="x265_params"):
        hevc.HEVC(x265_params="a=1 b=2")


def test_bad_params_and_dtypes():
    with pytest.raises(VolbenchError, match="unknown parameter"):
        hevc.HEVC(qp=3)
    with pytest.raises(VolbenchError, match="crf"):
        hevc.HEVC(crf=60)
    with pytest.raises(VolbenchError, match="preset"):
        hevc.HEVC(preset="turbo")
    with pytest.raises(VolbenchError, match="integer volumes"):
        hevc.HEVC().encode(np.zeros((2, 16, 16), np.float32), INFO)
    with pytest.raises(VolbenchError, match="12-bit"):
        hevc.HEVC(crf=-5).encode(np.zeros((2, 16, 16), np.uint8), INFO)


def test_damaged_payload_is_reported():
    vol = synthetic((6, 32, 64), np.uint16, hi=4000)
    enc = hevc.HEVC(preset="ultrafast", crf=20).encode(vol, INFO)
    with pytest.raises(CorruptFile, match="frames"):  # a cut stream decodes to fewer frames
        hevc.HEVC.decode(enc.header, enc.payload[: len(enc.payload) // 3], vol.shape, vol.dtype)
    with pytest.raises(VolbenchError):  # not an HEVC stream at all
        hevc.HEVC.decode(enc.header, b"\x00\x01garbage" * 50, vol.shape, vol.dtype)


def test_decode_in_fresh_process(tmp_path):
    vol = synthetic((4, 33, 45), np.uint16, lo=100, hi=3000)
    data, out = roundtrip(vol, crf=22)
    (tmp_path / "v.vbc").write_bytes(data)
    code = ("import sys, numpy as np; from volbench.codecs import decode_file; "
            "a, _ = decode_file(sys.argv[1]); np.save(sys.argv[2], a)")
    env = {**os.environ, "PYTHONPATH": str(WORKFLOW)}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "v.vbc"), str(tmp_path / "out.npy")],
                   check=True, env=env, cwd=tmp_path, timeout=120)
    fresh = np.load(tmp_path / "out.npy")
    assert fresh.dtype == vol.dtype
    np.testing.assert_array_equal(fresh, out)


def test_missing_ffmpeg(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no ffmpeg
    with pytest.raises(CodecUnavailable, match="apt-get install ffmpeg"):
        hevc.HEVC.check_available()
    with pytest.raises(CodecUnavailable, match="ffmpeg not found"):
        encode_volume("hevc", {}, np.zeros((1, 16, 16), np.uint8), INFO)


def test_ffmpeg_without_libx265(monkeypatch):
    # a real FFmpeg build without libx265: muxer-ffmpeg bundles a minimal LGPL ffmpeg 8 (remux only,
    # no encoders at all); the codec is pointed at it through VOLBENCH_FFMPEG
    muxer_ffmpeg = pytest.importorskip("muxer_ffmpeg", reason="pip install muxer-ffmpeg (an ffmpeg without libx265)")
    exe = str(muxer_ffmpeg.find_ffmpeg())
    banner = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=60).stdout
    assert banner.startswith("ffmpeg version") and "libx265" not in banner
    monkeypatch.setenv(hevc.FFMPEG_ENV, exe)
    with pytest.raises(CodecUnavailable, match=r"has no libx265 encoder.*apt-get install ffmpeg"):
        hevc.HEVC.check_available()
    with pytest.raises(CodecUnavailable, match="no libx265"):
        encode_volume("hevc", {}, np.zeros((1, 16, 16), np.uint8), INFO)
    # and the variable is honoured the other way: the system ffmpeg named explicitly works
    monkeypatch.setenv(hevc.FFMPEG_ENV, "ffmpeg")
    hevc.HEVC.check_available()


def test_bad_ffmpeg_variable(monkeypatch, tmp_path):
    monkeypatch.setenv(hevc.FFMPEG_ENV, str(tmp_path / "nonexistent-ffmpeg"))
    with pytest.raises(CodecUnavailable, match="VOLBENCH_FFMPEG=.*not an executable"):
        hevc.HEVC.check_available()
