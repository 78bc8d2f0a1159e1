"""Payload formats of the Gaussian codecs.

* ``f16``: VolMicro's 22 bytes per Gaussian (seed 001 Table 4): position 3 x float16 (unit cube),
  scale 3 x float16 (normalised units), quaternion 4 x float16, intensity 1 x float16. Stored as
  four planar little-endian float16 arrays, so the payload is exactly 22 * N bytes; N and the
  de-normalisation constants live in the codec's JSON header.
* ``quantised`` (GaussianPile sec. 4.3): Gaussians sorted in Morton order of their quantised
  positions; positions ``pos_bits`` per axis in the bounding box of the means, opacity
  ``opacity_bits`` in [0, 1], log-scales ``scale_bits`` in [min, max] of all log-scales,
  quaternions on the positive half-sphere (w >= 0) ``rot_bits`` per component in [-1, 1]. Each of
  the four attribute streams is delta-coded along the Morton order (per component, planar,
  little-endian int16, or int32 above 15 bits) and compressed with LZMA2 (raw format, preset 9e).
  Payload: b"GPQ1", u32 N, 4 x u32 stream lengths, the four streams.
* ``raw``: the "w/o quantisation" variant: b"GPR1", u32 N, then float32 means (N,3), log-scales
  (N,3), quaternions (N,4), opacities (N,), planar little-endian, no entropy coding.

Every parser checks lengths and values and raises CorruptFile with a one-line reason.
"""

from __future__ import annotations

import lzma
import struct

import numpy as np

from ..errors import CorruptFile
from . import morton

F16_BYTES_PER_GAUSSIAN = 22
RAW_BYTES_PER_GAUSSIAN = 44
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


# -- VolMicro float16 records --------------------------------------------------------------------
def pack_f16(pos: np.ndarray, scale: np.ndarray, quat: np.ndarray, intensity: np.ndarray) -> bytes:
    n = len(pos)
    parts = [np.asarray(a, dtype="<f2").reshape(n, -1) for a in (pos, scale, quat, intensity)]
    if [p.shape[1] for p in parts] != [3, 3, 4, 1]:
        raise ValueError("pack_f16 expects (N,3), (N,3), (N,4), (N,) arrays")
    return b"".join(p.tobytes() for p in parts)


def unpack_f16(payload: bytes, n: int, source: str = "<payload>") -> dict[str, np.ndarray]:
    if n < 0 or len(payload) != F16_BYTES_PER_GAUSSIAN * n:
        raise CorruptFile(
            f"{source}: VolMicro payload has {len(payload)} bytes, expected 22 x {n} = {22 * n}; re-run its encode job"
        )
    out, off = {}, 0
    for key, width in (("pos", 3), ("scale", 3), ("quat", 4), ("intensity", 1)):
        size = 2 * width * n
        arr = np.frombuffer(payload, dtype="<f2", count=width * n, offset=off).astype(np.float32).reshape(n, width)
        off += size
        out[key] = arr
    out["intensity"] = out["intensity"][:, 0]
    if n and not all(np.isfinite(a).all() for a in out.values()):
        raise CorruptFile(f"{source}: VolMicro payload holds non-finite values (damaged file); re-run its encode job")
    return out


# -- GaussianPile quantised streams ---------------------------------------------------------------
def _qdtype(bits: int) -> str:
    return "<i2" if bits <= 15 else "<i4"


def _quantise(x: np.ndarray, lo: float, hi: float, bits: int) -> np.ndarray:
    levels = (1 << bits) - 1
    span = hi - lo
    if span <= 0:
        return np.zeros(x.shape, dtype=np.int64)
    return np.clip(np.rint((x.astype(np.float64) - lo) / span * levels), 0, levels).astype(np.int64)


def _dequantise(q: np.ndarray, lo: float, hi: float, bits: int) -> np.ndarray:
    levels = (1 << bits) - 1
    return (lo + q.astype(np.float64) * ((hi - lo) / levels)).astype(np.float32)


def _delta_stream(q: np.ndarray, bits: int) -> bytes:
    """(N, C) integers -> LZMA of the planar per-component first differences."""
    d = np.diff(q.T, axis=1, prepend=0)  # component-major, delta along the Morton order
    return lzma.compress(np.ascontiguousarray(d).astype(_qdtype(bits)).tobytes(), format=lzma.FORMAT_RAW,
                         filters=_LZMA_FILTERS)


def _undelta_stream(blob: bytes, n: int, c: int, bits: int, what: str, source: str) -> np.ndarray:
    try:
        raw = lzma.decompress(blob, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    except lzma.LZMAError as exc:
        raise CorruptFile(f"{source}: {what} stream cannot be decompressed ({exc}); re-run its encode job") from None
    dt = np.dtype(_qdtype(bits))
    if len(raw) != n * c * dt.itemsize:
        raise CorruptFile(
            f"{source}: {what} stream holds {len(raw)} bytes, expected {n * c * dt.itemsize}; re-run its encode job"
        )
    q = np.cumsum(np.frombuffer(raw, dtype=dt).astype(np.int64).reshape(c, n), axis=1).T
    if n and (q.min() < 0 or q.max() > (1 << bits) - 1):
        raise CorruptFile(f"{source}: {what} stream decodes outside its {bits}-bit range (damaged file)")
    return q


_STREAMS = ("position", "opacity", "scale", "rotation")
_QHEAD = struct.Struct("<4sI4I")


def canonical_quats(quats: np.ndarray) -> np.ndarray:
    """Unit quaternions on the positive half-sphere (w >= 0); a zero quaternion becomes identity."""
    q = np.asarray(quats, dtype=np.float64)
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(norm > 0, q / np.where(norm > 0, norm, 1), np.array([1.0, 0, 0, 0]))
    return np.where(q[:, :1] < 0, -q, q)


def pack_quantised(means, log_scales, quats, opacity, bits: dict[str, int]) -> tuple[dict, bytes]:
    """Quantise, Morton-sort, delta-code, LZMA. Returns (header fields, payload)."""
    means = np.asarray(means, dtype=np.float64)
    log_scales = np.asarray(log_scales, dtype=np.float64)
    opacity = np.asarray(opacity, dtype=np.float64).reshape(-1)
    quats = canonical_quats(quats)
    n = len(means)
    pb, ob, sb, rb = bits["position"], bits["opacity"], bits["scale"], bits["rotation"]
    for k, b in bits.items():
        if not 2 <= int(b) <= morton.MAX_BITS:
            raise ValueError(f"{k} bits must be in [2, {morton.MAX_BITS}], got {b}")
    lo = means.min(0) if n else np.zeros(3)
    hi = means.max(0) if n else np.zeros(3)
    qpos = np.stack([_quantise(means[:, a], lo[a], hi[a], pb) for a in range(3)], axis=1)
    perm = morton.order(qpos) if n else np.zeros(0, dtype=np.int64)
    s_lo = float(log_scales.min()) if n else 0.0
    s_hi = float(log_scales.max()) if n else 0.0
    qpos = qpos[perm]
    qop = _quantise(opacity[perm], 0.0, 1.0, ob)[:, None]
    qsc = _quantise(log_scales[perm], s_lo, s_hi, sb)
    qrot = _quantise(quats[perm], -1.0, 1.0, rb)
    streams = [_delta_stream(qpos, pb), _delta_stream(qop, ob), _delta_stream(qsc, sb), _delta_stream(qrot, rb)]
    payload = _QHEAD.pack(b"GPQ1", n, *[len(s) for s in streams]) + b"".join(streams)
    header = {
        "format": "quantised", "n": int(n), "bits": {k: int(v) for k, v in bits.items()},
        "bbox_lo": [float(v) for v in lo], "bbox_hi": [float(v) for v in hi],
        "log_scale_lo": s_lo, "log_scale_hi": s_hi,
    }
    return header, payload


def unpack_quantised(header: dict, payload: bytes, source: str = "<payload>") -> dict[str, np.ndarray]:
    if len(payload) < _QHEAD.size:
        raise CorruptFile(f"{source}: quantised Gaussian payload is truncated ({len(payload)} bytes)")
    magic, n, *lens = _QHEAD.unpack_from(payload, 0)
    if magic != b"GPQ1":
        raise CorruptFile(f"{source}: quantised Gaussian payload has a bad magic {magic!r}; re-run its encode job")
    if n != int(header.get("n", -1)):
        raise CorruptFile(f"{source}: payload holds {n} Gaussians, header says {header.get('n')}")
    if _QHEAD.size + sum(lens) != len(payload):
        raise CorruptFile(
            f"{source}: quantised payload is {len(payload)} bytes, its stream table says {_QHEAD.size + sum(lens)}"
        )
    bits = header["bits"]
    widths = {"position": 3, "opacity": 1, "scale": 3, "rotation": 4}
    off, q = _QHEAD.size, {}
    for name, length in zip(_STREAMS, lens):
        q[name] = _undelta_stream(payload[off:off + length], n, widths[name], int(bits[name]), name, source)
        off += length
    lo, hi = header["bbox_lo"], header["bbox_hi"]
    means = np.stack([_dequantise(q["position"][:, a], lo[a], hi[a], bits["position"]) for a in range(3)], axis=1)
    return {
        "means": means.reshape(n, 3),
        "opacity": _dequantise(q["opacity"][:, 0], 0.0, 1.0, bits["opacity"]),
        "log_scales": _dequantise(q["scale"], header["log_scale_lo"], header["log_scale_hi"], bits["scale"]).reshape(n, 3),
        "quats": _dequantise(q["rotation"], -1.0, 1.0, bits["rotation"]).reshape(n, 4),
    }


def quantisation_error_bounds(header: dict) -> dict[str, np.ndarray | float]:
    """Largest absolute round-trip error per attribute (half a quantisation step)."""
    b = header["bits"]
    span = np.asarray(header["bbox_hi"]) - np.asarray(header["bbox_lo"])
    return {
        "means": span / (2 * ((1 << b["position"]) - 1)),
        "opacity": 1.0 / (2 * ((1 << b["opacity"]) - 1)),
        "log_scales": (header["log_scale_hi"] - header["log_scale_lo"]) / (2 * ((1 << b["scale"]) - 1)),
        "quats": 2.0 / (2 * ((1 << b["rotation"]) - 1)),
    }


def estimate_quantised_bytes(bits: dict[str, int]) -> float:
    """Bytes per Gaussian of the quantised streams before LZMA (an upper estimate for rate control)."""
    return (3 * bits["position"] + bits["opacity"] + 3 * bits["scale"] + 4 * bits["rotation"]) / 8.0


# -- raw float32 ("w/o quantisation") -------------------------------------------------------------
_RHEAD = struct.Struct("<4sI")


def pack_raw(means, log_scales, quats, opacity) -> tuple[dict, bytes]:
    n = len(means)
    arrays = [np.asarray(a, dtype="<f4").reshape(n, -1) for a in (means, log_scales, quats, opacity)]
    return {"format": "raw", "n": int(n), "raw_dtype": "float32"}, _RHEAD.pack(b"GPR1", n) + b"".join(
        a.tobytes() for a in arrays)


def unpack_raw(header: dict, payload: bytes, source: str = "<payload>") -> dict[str, np.ndarray]:
    if len(payload) < _RHEAD.size:
        raise CorruptFile(f"{source}: raw Gaussian payload is truncated ({len(payload)} bytes)")
    magic, n = _RHEAD.unpack_from(payload, 0)
    if magic != b"GPR1" or n != int(header.get("n", -1)):
        raise CorruptFile(f"{source}: raw Gaussian payload header is damaged; re-run its encode job")
    if len(payload) != _RHEAD.size + RAW_BYTES_PER_GAUSSIAN * n:
        raise CorruptFile(
            f"{source}: raw Gaussian payload is {len(payload)} bytes, expected {_RHEAD.size + 44 * n}"
        )
    off, out = _RHEAD.size, {}
    for key, width in (("means", 3), ("log_scales", 3), ("quats", 4), ("opacity", 1)):
        out[key] = np.frombuffer(payload, dtype="<f4", count=width * n, offset=off).astype(np.float32).reshape(n, width)
        off += 4 * width * n
    out["opacity"] = out["opacity"][:, 0]
    if n and not all(np.isfinite(a).all() for a in out.values()):
        raise CorruptFile(f"{source}: raw Gaussian payload holds non-finite values (damaged file)")
    return out


def unpack_gaussians(header: dict, payload: bytes, source: str = "<payload>") -> dict[str, np.ndarray]:
    fmt = header.get("format")
    if fmt == "quantised":
        return unpack_quantised(header, payload, source)
    if fmt == "raw":
        return unpack_raw(header, payload, source)
    raise CorruptFile(f"{source}: unknown Gaussian payload format {fmt!r}")


def bits_from_params(params: dict) -> dict[str, int]:
    return {"position": int(params["position_bits"]), "opacity": int(params["opacity_bits"]),
            "scale": int(params["scale_bits"]), "rotation": int(params["rotation_bits"])}
