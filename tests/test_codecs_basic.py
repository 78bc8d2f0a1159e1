"""The codec interface with the two foundation codecs (zstd, zfp): round trips, registry, errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from volbench.codecs import base
from volbench.codecs.base import VolumeInfo, decode_bytes, encode_volume, get_codec
from volbench.errors import CorruptFile, VolbenchError

SHAPES = [(5, 7, 9), (8, 16, 16), (3, 33, 17)]


def _vol(shape, dtype, rng):
    if np.dtype(dtype).kind == "f":
        return rng.normal(100, 30, shape).astype(dtype)
    hi = min(np.iinfo(dtype).max, 4095)
    return rng.integers(0, hi, shape).astype(dtype)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_zstd_bit_exact(shape, dtype, rng):
    v = _vol(shape, dtype, rng)
    data, rec = encode_volume("zstd", {"level": 3}, v, VolumeInfo())
    out, header = decode_bytes(data)
    assert out.dtype == v.dtype and out.shape == v.shape
    assert np.array_equal(out, v)
    assert rec["bytes"] == len(data) and header["codec"] == "zstd"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_zfp_reversible_bit_exact(shape, dtype, rng):
    v = _vol(shape, dtype, rng)
    data, _ = encode_volume("zfp", {"mode": "reversible"}, v, VolumeInfo())
    out, _ = decode_bytes(data)
    assert out.dtype == v.dtype and np.array_equal(out, v)


@pytest.mark.parametrize("tol", [0.5, 4.0, 32.0])
def test_zfp_accuracy_within_bound(tol, rng):
    v = rng.integers(0, 60000, (9, 20, 22)).astype(np.uint16)
    data, _ = encode_volume("zfp", {"mode": "accuracy", "tolerance": tol}, v, VolumeInfo())
    out, _ = decode_bytes(data)
    assert out.dtype == np.uint16
    # zfp's bound on the float values, plus 0.5 for rounding back to integers
    assert np.abs(out.astype(np.int64) - v.astype(np.int64)).max() <= tol + 0.5


def test_zfp_rate_sets_size(rng):
    v = rng.integers(0, 4000, (16, 32, 32)).astype(np.uint16)
    sizes = []
    for r in (1, 2, 4, 8):
        data, rec = encode_volume("zfp", {"mode": "rate", "rate": r}, v, VolumeInfo())
        sizes.append(rec["bytes"])
        # fixed rate: payload close to rate bits per voxel (the header is small)
        assert abs(len(data) * 8 / v.size - r) < 0.2 * r + 0.5
    assert sizes == sorted(sizes) and len(set(sizes)) == 4


def test_zfp_target_bpp_within_tolerance(rng):
    from volbench.datasets.synthetic import neuron

    v = neuron(shape=(16, 48, 48), seed=3)
    data, rec = encode_volume("zfp", {"mode": "rate", "target_bpp": 0.8}, v, VolumeInfo(), tolerance=0.05)
    bpp = len(data) * 8 / v.size
    assert abs(bpp / 0.8 - 1) <= 0.05, rec["rate_control"]
    assert rec["rate_control"]["knob"] == "rate"


def test_decode_in_fresh_process_reads_only_the_file(tmp_path, rng):
    v = rng.integers(0, 3000, (6, 20, 24)).astype(np.uint16)
    data, _ = encode_volume("zfp", {"mode": "rate", "rate": 6}, v, VolumeInfo())
    f = tmp_path / "only" / "volume.vbc"
    f.parent.mkdir()
    f.write_bytes(data)
    in_proc, _ = decode_bytes(data)
    out = tmp_path / "dec.tif"
    # a fresh interpreter in an unrelated working directory, given nothing but the file
    subprocess.run([sys.executable, "-m", "volbench.cli", "decode-file", str(f), str(out)], check=True,
                   cwd=tmp_path / "only")
    from volbench.io import read_volume

    assert np.array_equal(read_volume(out), in_proc)


def test_unknown_codec_and_param():
    with pytest.raises(VolbenchError, match="unknown codec type 'nosuch'"):
        get_codec("nosuch")
    with pytest.raises(VolbenchError, match="unknown parameter"):
        get_codec("zstd")(levle=3)
    with pytest.raises(VolbenchError, match="level must be"):
        get_codec("zstd")(level=40)
    with pytest.raises(VolbenchError, match="mode must be"):
        get_codec("zfp")(mode="fast")


def test_registry_lists_the_codecs():
    names = base.available()
    for n in ("zstd", "zfp", "hevc", "jpeg2000", "siren", "volmicro", "gaussianpile"):
        assert n in names


def test_corrupt_payload_is_a_clear_error(rng):
    v = rng.integers(0, 3000, (4, 8, 8)).astype(np.uint16)
    data, _ = encode_volume("zstd", {"level": 1}, v, VolumeInfo())
    with pytest.raises(CorruptFile, match="x.vbc"):
        decode_bytes(data[:-7], "x.vbc")


def test_zfp_rate_below_floor_is_refused_not_a_crash(rng):
    # zfpy 1.0.1 aborts the interpreter at fixed rates under about 0.15 bpv; volbench must refuse
    v = rng.integers(0, 4000, (8, 16, 16)).astype(np.uint16)
    with pytest.raises(VolbenchError, match=r"rate 0.1 is outside"):
        encode_volume("zfp", {"mode": "rate", "rate": 0.1}, v, VolumeInfo())


def test_zfp_low_target_bpp_does_not_crash_the_process(tmp_path):
    # the bisection must stay above the floor: run it in a child so an abort would show as a signal
    code = ("import numpy as np\n"
            "from volbench.codecs.base import VolumeInfo, encode_volume\n"
            "from volbench.errors import VolbenchError\n"
            "v = np.random.default_rng(0).integers(0, 4000, (16, 32, 32)).astype(np.uint16)\n"
            "try:\n"
            "    data, rec = encode_volume('zfp', {'mode': 'rate', 'target_bpp': 0.08}, v, VolumeInfo())\n"
            "    print('bpp', len(data) * 8 / v.size)\n"
            "except VolbenchError as e:\n"
            "    print('refused', e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(("bpp", "refused")), r.stdout


def test_codecs_describe_themselves_for_the_tables_and_figures(rng):
    """Each codec states its name in the tables, its family (the hue in the figures), its order and
    whether it trains; encode.json records it, with the file's figures (Codec.file_stats)."""
    shown = {k: get_codec(k).describe() for k in base.available()}
    assert {k: d["display_name"] for k, d in shown.items()} == {
        "hevc": "HEVC (x265)", "jpeg2000": "JPEG2000 (slice-wise)", "zfp": "ZFP", "zstd": "Zstandard (lossless)",
        "siren": "COIN (SIREN)", "volmicro": "VolMicro", "gaussianpile": "GaussianPile",
        "gs3d_slice": "3DGS (slice-adapted)"}
    order = sorted(shown, key=lambda k: shown[k]["table_order"])
    assert order == ["hevc", "jpeg2000", "zfp", "zstd", "siren", "gs3d_slice", "volmicro", "gaussianpile"]
    assert {k for k, d in shown.items() if d["trains"]} == {"siren", "volmicro", "gaussianpile", "gs3d_slice"}
    assert {d["family"] for d in shown.values()} == {"video", "wavelet", "float", "lossless", "neural", "gaussian"}
    _, rec = encode_volume("zstd", {"level": 1}, _vol((4, 8, 8), "uint16", rng), VolumeInfo())
    assert {k: rec[k] for k in shown["zstd"]} == shown["zstd"]
    assert get_codec("volmicro").file_stats({"n": 12, "vmin": 0.0}) == {"n_gaussians": 12}
    assert get_codec("zstd").file_stats({"level": 1}) == {}
