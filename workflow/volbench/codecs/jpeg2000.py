"""JPEG 2000 (OpenJPEG through glymur), slice by slice along Z.

OpenJPEG has no volumetric mode and glymur writes 2D uint8/uint16 images only, so every Z
slice is one JPEG 2000 codestream (.j2k, no JP2 boxes): irreversible 9/7 wavelet with a
target compression ratio ``ratio`` for lossy coding, reversible 5/3 without a rate limit
when ``lossless`` is set. ``ratio`` is OpenJPEG's ratio against the raw slice at the coded
sample precision (8 bits for uint8, 16 bits otherwise); larger ratio = smaller file.

Payload layout (little-endian)::

    n          u32          number of slices (= Z)
    hlen       u32          length of the shared main header (0: none shared)
    head       hlen bytes   the J2K main header (SOC up to the first SOT) common to all slices
    lengths    n x u32      byte length of each slice's remaining codestream
    streams    ...          slice z's codestream is head + streams[z], slice 0 first

All slices are coded with the same settings, so their main headers (SIZ, COD, QCD, COM
markers, ~100-150 bytes) are identical; storing it once instead of Z times is a lossless
repacking that keeps per-slice wrapping from inflating low-rate files. Should the headers
differ, hlen is 0 and every stream is complete.

Sample mapping (codec header ``transform``): uint8 and uint16 are coded as they are; other
integer volumes are mapped into uint16 by ``m = round((v - min) / scale)`` with ``identity``
(values already in 0..65535), ``offset`` (range fits 16 bits, exact, scale 1) or ``scale``
(wider range, ``scale = (max - min) / 65535``, lossy even with ``lossless``); decoding inverts
it and restores the dtype. Float volumes are refused.

glymur reads and writes files only, so slices pass through a private temporary directory
that is removed afterwards, in memory (``/dev/shm``) where the system has it, which took a
quarter off decode time against a disk-backed temporary directory. ``threads`` (default:
the job's thread count) sets glymur's ``lib.num_threads`` (OpenJPEG's own worker threads)
during encode and decode. The number of wavelet resolutions is 6, fewer for slices smaller
than 32 pixels on a side.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import REENCODE, CodecUnavailable, CorruptFile, VolbenchError
from .base import Codec, Encoded, VolumeInfo

INSTALL_HINT = "install OpenJPEG: apt-get install libopenjp2-7"
MAX_NUMRES = 6


def _glymur():
    try:
        import glymur
    except ImportError:
        raise CodecUnavailable("codec jpeg2000: the Python package glymur is missing; pip install glymur") from None
    return glymur


def _openjpeg_version(glymur) -> str:
    from glymur.lib import openjp2

    if getattr(openjp2, "OPENJP2", None) is None:
        return "0.0.0"
    return openjp2.version()


def to_uint16(volume: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Map an integer volume into uint16; return it and the inverse's parameters."""
    vmax16 = 65535
    vmin = int(volume.min()) if volume.size else 0
    vmax = int(volume.max()) if volume.size else 0
    if vmin >= 0 and vmax <= vmax16:
        return volume.astype(np.uint16), {"kind": "identity", "min": 0, "scale": 1.0, "exact": True}
    if vmax - vmin <= vmax16:
        return (volume.astype(np.int64) - vmin).astype(np.uint16), {"kind": "offset", "min": vmin, "scale": 1.0,
                                                                    "exact": True}
    scale = (vmax - vmin) / vmax16
    mapped = np.clip(np.rint((volume.astype(np.float64) - vmin) / scale), 0, vmax16).astype(np.uint16)
    return mapped, {"kind": "scale", "min": vmin, "scale": scale, "exact": False}


def from_uint16(mapped: np.ndarray, t: dict[str, Any], dtype: np.dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    lim = np.iinfo(dtype)
    if t["kind"] == "identity":
        return mapped.astype(dtype)
    if t["kind"] == "offset":
        return np.clip(mapped.astype(np.int64) + int(t["min"]), lim.min, lim.max).astype(dtype)
    if t["kind"] == "scale":
        v = np.rint(mapped.astype(np.float64) * float(t["scale"]) + float(t["min"]))
        return np.clip(v, lim.min, lim.max).astype(dtype)
    raise CorruptFile(f"codec jpeg2000: unknown sample transform {t['kind']!r} in header")


def numres_for(ny: int, nx: int) -> int:
    """Wavelet resolutions OpenJPEG accepts for a slice (each side >= 2**(numres-1))."""
    side = max(1, min(ny, nx))
    return max(1, min(MAX_NUMRES, side.bit_length()))


def _main_header_length(cs: bytes) -> int:
    """Offset of the first SOT marker of a J2K codestream (the main header's length)."""
    if cs[:2] != b"\xff\x4f":
        raise VolbenchError("codec jpeg2000: OpenJPEG wrote no J2K codestream (missing SOC marker)")
    pos = 2
    while pos + 4 <= len(cs):
        if cs[pos:pos + 2] == b"\xff\x90":
            return pos
        pos += 2 + struct.unpack_from(">H", cs, pos + 2)[0]
    raise VolbenchError("codec jpeg2000: no tile-part (SOT marker) found in OpenJPEG's codestream")


def _checked_types(header: dict[str, Any], dtype: np.dtype) -> tuple[np.dtype, int]:
    """The coded sample type and its bits, checked against the volume's dtype and transform."""
    coded, t = header.get("coded_dtype"), header.get("transform")
    if coded not in ("uint8", "uint16"):
        raise CorruptFile(f"codec jpeg2000: header coded_dtype {coded!r} is not uint8 or uint16; {REENCODE}")
    if t is None:
        if coded != dtype.name:
            raise CorruptFile(f"codec jpeg2000: {coded} slices without a transform cannot hold a {dtype.name} "
                              f"volume; {REENCODE}")
    elif (not isinstance(t, dict) or t.get("kind") not in ("identity", "offset", "scale") or coded != "uint16"
          or dtype.kind not in "ui"):
        raise CorruptFile(f"codec jpeg2000: invalid sample transform {t!r} for {coded} slices of a {dtype.name} "
                          f"volume; {REENCODE}")
    return np.dtype(coded), 8 * np.dtype(coded).itemsize


_SIZ = struct.Struct(">HHIIIIIIIIH")


def _check_siz(cs: bytes, z: int, ny: int, nx: int, bits: int) -> None:
    """Slice z's codestream declares one tile of ny x nx, one component of `bits` unsigned bits
    (what the encoder writes); CorruptFile otherwise."""
    if len(cs) < 4 + _SIZ.size + 3 or cs[:4] != b"\xff\x4f\xff\x51":
        raise CorruptFile(f"codec jpeg2000: slice {z} is not a J2K codestream (no SOC, SIZ); {REENCODE}")
    _, _, xs, ys, xo, yo, xt, yt, xto, yto, comps = _SIZ.unpack_from(cs, 4)
    ssiz, xr, yr = cs[4 + _SIZ.size], cs[5 + _SIZ.size], cs[6 + _SIZ.size]
    if (xs - xo, ys - yo) != (nx, ny) or comps != 1 or (ssiz & 0x7F) + 1 != bits or ssiz & 0x80 or (xr, yr) != (1, 1):
        raise CorruptFile(f"codec jpeg2000: slice {z} declares {ys - yo}x{xs - xo}, {comps} component(s) of "
                          f"{(ssiz & 0x7F) + 1} bits, the header says {ny}x{nx}, 1 of {bits}; {REENCODE}")
    if xo or yo or xto or yto or xt < xs or yt < ys:
        raise CorruptFile(f"codec jpeg2000: slice {z} is tiled ({xt}x{yt} tiles), volbench writes one tile; {REENCODE}")


def _scratch_parent() -> str | None:
    """A RAM-backed directory for the per-slice files where available, else the default temp dir."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


@contextlib.contextmanager
def _threads(glymur, n: int):
    old = glymur.get_option("lib.num_threads")
    glymur.set_option("lib.num_threads", max(1, int(n)))
    try:
        yield
    finally:
        glymur.set_option("lib.num_threads", old)


class JPEG2000(Codec):
    name = "jpeg2000"
    lossless = False
    display_name = "JPEG2000 (slice-wise)"
    family = "wavelet"
    table_order = 20
    rate_knob = "ratio"
    rate_knob_range = (1.0, 1000.0)
    rate_knob_integer = False
    rate_knob_increases_size = False
    rate_knob_log = True
    defaults = {"ratio": 20.0, "lossless": False, "threads": None}

    def check_params(self) -> None:
        p = self.params
        try:
            ratio = float(p["ratio"])
        except (TypeError, ValueError):
            raise VolbenchError(f"codec jpeg2000: ratio must be a number, got {p['ratio']!r}") from None
        if not ratio >= 1.0:
            raise VolbenchError(f"codec jpeg2000: ratio must be >= 1, got {ratio}")
        if not isinstance(p["lossless"], bool):
            raise VolbenchError(f"codec jpeg2000: lossless must be true or false, got {p['lossless']!r}")
        t = p["threads"]
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 1):
            raise VolbenchError(f"codec jpeg2000: threads must be a positive integer or null, got {t!r}")

    def encode(self, volume: np.ndarray, info: VolumeInfo) -> Encoded:
        if volume.ndim != 3:
            raise VolbenchError(f"{info.name}: jpeg2000 needs a 3D volume (Z, Y, X), got shape {volume.shape}")
        if not np.issubdtype(volume.dtype, np.integer):
            raise VolbenchError(
                f"{info.name}: codec jpeg2000 codes integer volumes only, got {volume.dtype}; "
                "convert the dataset to uint8/uint16 first")
        glymur = _glymur()
        p = self.params
        transform = None
        data = volume
        if volume.dtype not in (np.uint8, np.uint16):
            data, transform = to_uint16(volume)
        nz, ny, nx = volume.shape
        numres = numres_for(ny, nx)
        kw: dict[str, Any] = {"numres": numres}
        if p["lossless"]:
            kw["irreversible"] = False
        else:
            kw["irreversible"] = True
            kw["cratios"] = [float(p["ratio"])]
        threads = p["threads"] or info.threads
        streams = []
        with tempfile.TemporaryDirectory(prefix="volbench-j2k-", dir=_scratch_parent()) as tmp, \
                _threads(glymur, threads), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = Path(tmp) / "slice.j2k"
            for z in range(nz):
                if path.exists():
                    path.unlink()
                try:
                    glymur.Jp2k(str(path), data=np.ascontiguousarray(data[z]), **kw)
                except Exception as exc:  # noqa: BLE001 - OpenJPEG reports through exceptions of its own
                    raise VolbenchError(f"{info.name}: OpenJPEG failed on slice {z}: {exc}") from None
                streams.append(path.read_bytes())
        head = streams[0][:_main_header_length(streams[0])]
        if all(st[:len(head)] == head for st in streams):
            streams = [st[len(head):] for st in streams]
        else:
            head = b""
        index = struct.pack(f"<II", nz, len(head)) + head + struct.pack(f"<{nz}I", *[len(st) for st in streams])
        header = {"format": "j2k-per-slice", "index": "u32le n, hlen, head, n lengths", "coded_dtype": data.dtype.name,
                  "numres": numres, "threads": int(threads), "transform": transform}
        return Encoded(header=header, payload=index + b"".join(streams))

    @classmethod
    def decode(cls, header: dict[str, Any], payload: bytes, shape: tuple[int, ...], dtype: np.dtype,
               device: str = "auto") -> np.ndarray:
        glymur = _glymur()
        nz, ny, nx = (int(s) for s in shape)
        if len(payload) < 8:
            raise CorruptFile(f"codec jpeg2000: payload too short for its slice index; {REENCODE}")
        n, hlen = struct.unpack_from("<II", payload, 0)
        if n != nz or len(payload) < 8 + hlen + 4 * n:
            raise CorruptFile(f"codec jpeg2000: slice index holds {n} slices, the volume has {nz}; {REENCODE}")
        head = payload[8:8 + hlen]
        lengths = struct.unpack_from(f"<{n}I", payload, 8 + hlen)
        off = 8 + hlen + 4 * n
        if off + sum(lengths) != len(payload):
            raise CorruptFile(f"codec jpeg2000: slice index does not match the payload length; {REENCODE}")
        coded, bits = _checked_types(header, np.dtype(dtype))
        threads = header.get("threads", 1)
        threads = max(1, min(os.cpu_count() or 1, threads if isinstance(threads, int) else 1))
        starts = np.concatenate(([off], off + np.cumsum(lengths, dtype=np.int64)))
        for z in range(n):  # every slice declares the header's image before anything is allocated
            _check_siz(head + payload[starts[z]:min(starts[z] + 64, starts[z + 1])], z, ny, nx, bits)
        out = np.empty((nz, ny, nx), dtype=coded)
        with tempfile.TemporaryDirectory(prefix="volbench-j2k-", dir=_scratch_parent()) as tmp, \
                _threads(glymur, threads), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = Path(tmp) / "slice.j2k"
            for z, length in enumerate(lengths):
                path.write_bytes(head + payload[off:off + length])
                off += length
                img = glymur.Jp2k(str(path))[:]
                if img.shape != (ny, nx):
                    raise CorruptFile(f"codec jpeg2000: slice {z} decoded to {img.shape}, expected {(ny, nx)}")
                out[z] = img
        if header.get("transform"):
            return from_uint16(out, header["transform"], dtype)
        return out.astype(np.dtype(dtype), copy=False)

    @classmethod
    def versions(cls) -> dict[str, str]:
        glymur = _glymur()
        return {"glymur": str(glymur.__version__), "openjpeg": _openjpeg_version(glymur)}

    @classmethod
    def check_available(cls) -> None:
        glymur = _glymur()
        v = _openjpeg_version(glymur)
        if v == "0.0.0":
            raise CodecUnavailable(f"codec jpeg2000: glymur found no OpenJPEG library (libopenjp2); {INSTALL_HINT}")
        if tuple(int(x) for x in v.split(".")[:2]) < (2, 4):
            raise CodecUnavailable(f"codec jpeg2000: OpenJPEG {v} is too old (glymur needs >= 2.4); {INSTALL_HINT}")
