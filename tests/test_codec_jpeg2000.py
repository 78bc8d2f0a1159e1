"""JPEG 2000 codec (OpenJPEG via glymur, slice by slice): round trips, lossless, rate, fresh process."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from volbench.codecs import jpeg2000
from volbench.codecs.base import VolumeInfo, decode_bytes, encode_volume, get_codec
from volbench.errors import CorruptFile, VolbenchError
from volbench.metrics import psnr_3d as psnr  # noqa: E402

WORKFLOW = Path(__file__).resolve().parents[1] / "workflow"
INFO = VolumeInfo(name="synthetic", threads=1)


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
    data, record = encode_volume("jpeg2000", params, vol, INFO)
    out, header = decode_bytes(data)
    assert out.shape == vol.shape and out.dtype == vol.dtype
    assert record["bytes"] == len(data)
    return data, out, header


def test_registered_and_versions():
    assert get_codec("jpeg2000") is jpeg2000.JPEG2000
    jpeg2000.JPEG2000.check_available()
    v = jpeg2000.JPEG2000.versions()
    assert v["openjpeg"] != "0.0.0" and v["glymur"]


# PSNR floors at ratio 3; measured 43.6-64.3 dB for the two larger shapes. Slices of a few
# hundred voxels spend most of their byte budget on the ~100-byte J2K main header, so their
# quality is low (measured 25-98 dB); they get a loose floor and test the odd-shape path.
@pytest.mark.parametrize("shape,floor", [((7, 33, 45), 40.0), ((4, 64, 64), 40.0), ((1, 16, 17), 20.0),
                                         ((3, 5, 70), 20.0), ((2, 1, 9), 20.0)])
@pytest.mark.parametrize("dtype,peak", [(np.uint8, 255), (np.uint16, 60000)])
def test_lossy_roundtrip_shapes(shape, floor, dtype, peak):
    vol = synthetic(shape, dtype, hi=peak)
    data, out, header = roundtrip(vol, ratio=3)
    assert header["codec_header"]["transform"] is None
    assert header["codec_header"]["numres"] == jpeg2000.numres_for(*shape[1:])
    assert psnr(vol, out, peak) > floor


@pytest.mark.parametrize("dtype,lo,hi", [(np.uint16, 0, 65535), (np.uint16, 100, 4095), (np.uint8, 0, 255),
                                         (np.int16, -20000, 12000)])
def test_lossless_bit_exact(dtype, lo, hi):
    vol = synthetic((5, 33, 45), dtype, lo=lo, hi=hi, noise=0.05)
    _, out, header = roundtrip(vol, lossless=True)
    np.testing.assert_array_equal(out, vol)
    if dtype == np.int16:
        assert header["codec_header"]["transform"]["kind"] == "offset"


def test_wide_integer_range_is_scaled():
    vol = synthetic((3, 20, 24), np.int32, lo=-10**6, hi=10**6, noise=0.05)
    _, out, header = roundtrip(vol, lossless=True)
    t = header["codec_header"]["transform"]
    assert t["kind"] == "scale" and not t["exact"]
    assert np.abs(out.astype(np.int64) - vol).max() <= t["scale"] / 2 + 1


def test_size_falls_as_ratio_rises():
    vol = synthetic((4, 64, 64), np.uint16, hi=4000, noise=0.02)
    sizes = [len(encode_volume("jpeg2000", {"ratio": r}, vol, INFO)[0]) for r in (2, 8, 32, 128)]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 4, sizes
    lossless = len(encode_volume("jpeg2000", {"lossless": True}, vol, INFO)[0])
    assert lossless > sizes[1]


def test_payload_index_and_threads():
    vol = synthetic((6, 48, 40), np.uint16, hi=4000)
    one = jpeg2000.JPEG2000(ratio=10, threads=1).encode(vol, INFO)
    two = jpeg2000.JPEG2000(ratio=10, threads=2).encode(vol, INFO)
    assert one.payload == two.payload  # OpenJPEG threads do not change the codestream
    n, hlen = struct.unpack_from("<II", one.payload, 0)
    head = one.payload[8:8 + hlen]
    lengths = struct.unpack_from("<6I", one.payload, 8 + hlen)
    assert n == 6 and 8 + hlen + 4 * 6 + sum(lengths) == len(one.payload)
    # the shared main header runs from SOC to the first SOT; each slice is head + its tile-part(s)
    # and ends with EOC; a slice coded alone is exactly head + body
    assert 40 < hlen < 300 and head[:2] == b"\xff\x4f"
    off = 8 + hlen + 4 * 6
    for z, length in enumerate(lengths):
        body = one.payload[off:off + length]
        assert body[:2] == b"\xff\x90" and body[-2:] == b"\xff\xd9"
        if z == 2:
            alone = jpeg2000.JPEG2000(ratio=10, threads=1).encode(vol[2:3], INFO).payload
            assert alone[8:8 + hlen] == head and alone[8 + hlen + 4:] == body
        off += length
    with pytest.raises(CorruptFile, match="slice index"):
        jpeg2000.JPEG2000.decode(one.header, one.payload[:-5], vol.shape, vol.dtype)


def test_bad_params_and_dtypes():
    with pytest.raises(VolbenchError, match="unknown parameter"):
        jpeg2000.JPEG2000(quality=3)
    with pytest.raises(VolbenchError, match="ratio"):
        jpeg2000.JPEG2000(ratio=0.5)
    with pytest.raises(VolbenchError, match="integer volumes"):
        jpeg2000.JPEG2000().encode(np.zeros((2, 16, 16), np.float64), INFO)


def test_decode_in_fresh_process(tmp_path):
    vol = synthetic((4, 33, 45), np.uint16, lo=100, hi=30000)
    data, out, _ = roundtrip(vol, ratio=12)
    (tmp_path / "v.vbc").write_bytes(data)
    code = ("import sys, numpy as np; from volbench.codecs import decode_file; "
            "a, _ = decode_file(sys.argv[1]); np.save(sys.argv[2], a)")
    env = {**os.environ, "PYTHONPATH": str(WORKFLOW)}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "v.vbc"), str(tmp_path / "out.npy")],
                   check=True, env=env, cwd=tmp_path, timeout=120)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), out)


def test_missing_openjpeg(tmp_path):
    # glymur reads ./glymurrc first; "openjp2: None" makes it load no OpenJPEG library,
    # exactly as on a machine without libopenjp2
    (tmp_path / "glymurrc").write_text("[library]\nopenjp2: None\n")
    code = ("from volbench.codecs.jpeg2000 import JPEG2000\n"
            "from volbench.errors import CodecUnavailable\n"
            "try:\n    JPEG2000.check_available()\nexcept CodecUnavailable as e:\n    print('UNAVAILABLE', e)\n")
    env = {**os.environ, "PYTHONPATH": str(WORKFLOW)}
    res = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "UNAVAILABLE" in res.stdout and "apt-get install libopenjp2-7" in res.stdout, res.stdout
