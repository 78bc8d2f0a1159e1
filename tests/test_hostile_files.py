"""Crafted compressed files (issue 22, items 1-2): a file never chooses code to run, and every
header is checked against its payload and sane limits before anything is allocated; each refusal
is one line that names the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from volbench import container
from volbench.codecs import base
from volbench.codecs.base import VolumeInfo, decode_bytes, encode_volume
from volbench.errors import CorruptFile

TESTS = Path(__file__).resolve().parent
EVIL = "import pathlib\npathlib.Path('IMPORTED').write_text('the header chose code to run')\n"


def _crafted(codec="evil", module="evil", shape=(2, 3, 4), dtype="uint8", chead=None, payload=b"x"):
    h = {"codec": codec, "shape": list(shape), "dtype": dtype, "codec_header": chead or {}}
    if module:
        h["module"] = module
    return container.pack(h, payload)


def _cli(cwd, *args):
    return subprocess.run([sys.executable, "-m", "volbench.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def _one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("volbench: error:"), stderr
    return lines[0]


# -- item 1: the header's module is never imported unless the caller allows it ----------------------
def test_header_module_next_to_the_file_is_not_imported(tmp_path):
    """`python -m` puts the current folder on sys.path: a crafted .vbc beside evil.py must not run it,
    neither through the users' decode-file nor through the decode job the rule runs."""
    (tmp_path / "evil.py").write_text(EVIL)
    (tmp_path / "x.vbc").write_bytes(_crafted())
    r = _cli(tmp_path, "decode-file", "x.vbc", "y.tif")
    assert r.returncode == 1
    line = _one_line(r.stderr)
    assert "x.vbc" in line and "'evil'" in line and "--module evil" in line, line
    assert not (tmp_path / "IMPORTED").exists() and not (tmp_path / "y.tif").exists()
    # the decode job as the rule runs it (the codec in a child process): a failed cell, no import
    r = _cli(tmp_path, "decode", "--input", "x.vbc", "--out-dir", "out")
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "out" / "decode.json").read_text())
    assert rec["status"] == "failed" and "module 'evil'" in rec["error"], rec
    assert not (tmp_path / "IMPORTED").exists() and not (tmp_path / "out" / "volume.tif").exists()
    # a module the config does not name is refused too: only the named ones are allowed
    r = _cli(tmp_path, "decode-file", "--module", "toy_codec", "x.vbc", "y.tif")
    assert r.returncode == 1 and not (tmp_path / "IMPORTED").exists(), r.stderr


def test_header_module_named_by_the_caller_is_imported(tmp_path):
    """What the rule passes (`--module`, from the config) is the one way a module is imported."""
    (tmp_path / "evil.py").write_text(EVIL)
    (tmp_path / "x.vbc").write_bytes(_crafted())
    r = _cli(tmp_path, "decode-file", "--module", "evil", "x.vbc", "y.tif")
    assert (tmp_path / "IMPORTED").exists()  # allowed: imported (it defines no codec, so it fails)
    assert r.returncode == 1 and "defines no Codec subclass" in _one_line(r.stderr)


def test_module_codec_decodes_when_allowed(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    vol = np.arange(2 * 16 * 16, dtype=np.uint16).reshape(2, 16, 16)
    data, _ = encode_volume("toy", {"bits": 16}, vol, VolumeInfo(), module="toy_codec")
    assert container.unpack(data)[0]["module"] == "toy_codec"
    with pytest.raises(CorruptFile, match=r"v\.vbc: .*module 'toy_codec'"):
        decode_bytes(data, "v.vbc")
    out, _ = decode_bytes(data, "v.vbc", modules=["toy_codec"])
    assert np.array_equal(out, vol)


def test_volbench_codec_types_resolve_only_inside_volbench(tmp_path):
    """Without a module, a codec type is a module of volbench.codecs, never a name on sys.path."""
    (tmp_path / "zstdx.py").write_text(EVIL)
    (tmp_path / "x.vbc").write_bytes(_crafted(codec="zstdx", module=None))
    r = _cli(tmp_path, "decode-file", "x.vbc", "y.tif")
    assert r.returncode == 1 and "unknown codec type 'zstdx'" in _one_line(r.stderr)
    assert not (tmp_path / "IMPORTED").exists()
    for kind in ("../evil", "os.path", "", 3):
        with pytest.raises(CorruptFile, match="x.vbc"):
            decode_bytes(_crafted(codec=kind, module=None), "x.vbc")
    with pytest.raises(CorruptFile, match="not a Python module path"):
        decode_bytes(_crafted(module="../evil"), "x.vbc", modules=["../evil"])


# -- item 2: generic header fields --------------------------------------------------------------
def _real(kind, params, vol):
    data, _ = encode_volume(kind, params, vol, VolumeInfo())
    header, payload = container.unpack(data)
    return header, payload


def _with(header, payload, **changes):
    h = json.loads(json.dumps(header))
    for k, v in changes.items():
        if k.startswith("c_"):
            h["codec_header"][k[2:]] = v
        else:
            h[k] = v
    return container.pack(h, payload)


@pytest.mark.parametrize("field,value,needle", [
    ("dtype", "object", "not a numeric voxel type"),
    ("dtype", "O", "not a numeric voxel type"),
    ("dtype", "U100000000", "not a numeric voxel type"),
    ("dtype", [["a", "<u2"]], "not a numeric voxel type"),
    ("dtype", "complex64", "not a numeric voxel type"),
    ("shape", [0, 8, 8], "three positive integers"),
    ("shape", [-4, 8, 8], "three positive integers"),
    ("shape", [8, 8], "three positive integers"),
    ("shape", [4, 8.5, 8], "three positive integers"),
    ("shape", [True, 8, 8], "three positive integers"),
    ("shape", "4x8x8", "three positive integers"),
    ("shape", [16, 100000, 100000000], "GiB decoded, more than"),
    ("codec_header", [1, 2], "codec_header is not a JSON object"),
])
def test_generic_header_fields_are_checked(field, value, needle):
    header, payload = _real("zstd", {"level": 1}, np.zeros((4, 8, 8), np.uint16))
    with pytest.raises(CorruptFile) as err:
        decode_bytes(_with(header, payload, **{field: value}), "bad.vbc")
    msg = str(err.value)
    assert needle in msg and msg.startswith("bad.vbc: ") and "\n" not in msg, msg


def test_header_that_is_not_an_object_or_lacks_fields():
    for h in ([1, 2, 3], {"codec": "zstd"}, "text"):
        with pytest.raises(CorruptFile, match=r"^bad\.vbc: header"):
            decode_bytes(container.pack(h, b""), "bad.vbc")


def test_memory_limit_is_the_machines_unless_set(monkeypatch):
    monkeypatch.delenv(base.MAX_DECODE_BYTES_ENV, raising=False)
    assert base.max_decode_bytes() > 2**26
    monkeypatch.setenv(base.MAX_DECODE_BYTES_ENV, "500")
    header, payload = _real("zstd", {"level": 1}, np.zeros((4, 8, 8), np.uint16))  # 512 bytes
    with pytest.raises(CorruptFile, match=r"^big\.vbc: .*GiB decoded, more than"):
        decode_bytes(container.pack(header, payload), "big.vbc")


# -- item 2: each classical decoder checks its own fields before allocating ---------------------------
# Each case lifts the generic limit, so that only the codec's own check stands between the header and
# an allocation of the size it claims.
HUGE = 2**62


@pytest.fixture
def no_generic_limit(monkeypatch):
    monkeypatch.setenv("VOLBENCH_MAX_DECODE_BYTES", str(HUGE))


def _vol(dtype=np.uint16, shape=(4, 20, 30)):
    return (np.random.default_rng(0).random(shape) * 200).astype(dtype)


def _decode_fails(data, needle):
    with pytest.raises(CorruptFile) as err:
        decode_bytes(data, "c.vbc")
    msg = str(err.value)
    assert msg.startswith("c.vbc: ") and needle in msg and "\n" not in msg, msg
    return msg


def test_jpeg2000_header_claiming_a_huge_volume(no_generic_limit):
    """The issue's case: [16, 1e5, 1e5] tried to allocate 298 GiB."""
    header, payload = _real("jpeg2000", {"ratio": 10}, _vol(shape=(16, 20, 30)))
    _decode_fails(_with(header, payload, shape=[16, 100000, 100000]), "slice 0 declares 20x30")
    _decode_fails(_with(header, payload, c_coded_dtype="object"), "coded_dtype 'object'")
    _decode_fails(_with(header, payload, c_coded_dtype="uint8"), "cannot hold a uint16")
    _decode_fails(_with(header, payload, shape=[17, 20, 30]), "slice index holds 16 slices")
    out, _ = decode_bytes(_with(header, payload, c_threads=10**9), "c.vbc")  # threads clamped, decodes
    assert out.shape == (16, 20, 30)


def test_hevc_header_with_a_huge_frame_size(no_generic_limit):
    """The issue's case: a large frame_size tried 1.78 PiB."""
    header, payload = _real("hevc", {"crf": 30, "preset": "ultrafast"}, _vol())
    _decode_fails(_with(header, payload, c_frame_size=[10**7, 10**7]), "does not fit slices of 20x30")
    _decode_fails(_with(header, payload, shape=[10**6, 20, 30], c_frames=10**6), "cannot hold 1000000 coded frames")
    _decode_fails(_with(header, payload, c_bits=16), "unexpected bits 16")
    _decode_fails(_with(header, payload, dtype="float32"), "cannot hold a float32 volume")
    _decode_fails(_with(header, payload, c_transform={"kind": "scale", "min": 0, "scale": float("nan")}),
                  "invalid sample transform")
    _decode_fails(_with(header, payload, c_pad=[1, 1]), "disagree with frame_size")
    # a stream whose pictures are larger than the header says is refused, not read into memory
    big_header, big_payload = _real("hevc", {"crf": 30, "preset": "ultrafast"}, _vol(shape=(4, 40, 70)))
    _decode_fails(container.pack({**header, "codec_header": {**header["codec_header"]}}, big_payload),
                  "more than the header's 4 frames")


def test_zstd_frame_size_against_the_header(no_generic_limit):
    header, payload = _real("zstd", {"level": 1}, _vol())
    _decode_fails(_with(header, payload, shape=[4000, 2000, 3000]), "needs 48000000000")
    _decode_fails(_with(header, payload, c_byteorder="|"), "byteorder")
    _decode_fails(container.pack(header, b"not zstd at all"), "not a zstd frame")


def test_zfp_stream_header_against_the_header(no_generic_limit):
    header, payload = _real("zfp", {"mode": "rate", "rate": 4}, _vol())
    _decode_fails(_with(header, payload, shape=[400, 2000, 3000]), "the header says float32 400x2000x3000")
    _decode_fails(container.pack(header, payload[:-64]), "fixed-rate stream has")
    _decode_fails(container.pack(header, b"\x00" * 8), "no valid zfp header")
    # a variable-rate stream cut short decodes (to a wrong volume) without reading past its buffer
    header, payload = _real("zfp", {"mode": "accuracy", "tolerance": 1.0}, _vol())
    out, _ = decode_bytes(container.pack(header, payload[: len(payload) // 2]), "c.vbc")
    assert out.shape == (4, 20, 30)


def test_siren_header_against_the_payload(no_generic_limit):
    pytest.importorskip("torch")
    header, payload = _real("siren", {"preset": "demo", "iterations": 2, "width": 4, "verify": False}, _vol())
    _decode_fails(_with(header, payload, c_width=10**6), "needs")
    _decode_fails(_with(header, payload, c_weight_bits=32), "invalid values")
    _decode_fails(_with(header, payload, c_vmin=float("nan")), "invalid values")


def test_damaged_file_from_the_cli_is_one_line(tmp_path):
    header, payload = _real("hevc", {"crf": 30, "preset": "ultrafast"}, _vol())
    (tmp_path / "x.vbc").write_bytes(_with(header, payload, c_frame_size=[10**7, 10**7]))
    r = _cli(tmp_path, "decode-file", "x.vbc", "y.tif")
    assert r.returncode == 1 and "x.vbc: codec hevc: frame_size" in _one_line(r.stderr)
    assert not (tmp_path / "y.tif").exists()
