"""ZFP (zfpy): fixed-rate, fixed-accuracy, fixed-precision or reversible mode.

zfpy accepts int32/int64/float32/float64 only. Integer volumes of up to 16 bits are converted to
float32, which holds every such value exactly, and decoding rounds and clips back to the original
dtype; float32 volumes go in as they are. `rate` is bits per voxel (fixed-rate mode), `tolerance` an
absolute error bound in the volume's units (fixed-accuracy), `precision` bit planes.
"""

from __future__ import annotations

from importlib.metadata import version

import numpy as np

from ..errors import REENCODE, CorruptFile, VolbenchError
from .base import Codec, Encoded, VolumeInfo

#: zfpy 1.0.1 aborts the whole process ("malloc(): invalid size") in fixed-rate mode below about
#: 0.15 bits per value on 3D arrays; volbench refuses rates under this floor instead
MIN_RATE = 0.25

_KNOBS = {
    "rate": ("rate", (MIN_RATE, 32.0), True, True),
    "accuracy": ("tolerance", (1e-3, 1e5), False, True),
    "precision": ("precision", (1, 32), True, False),
}


def _checked_stream(zfpy, payload: bytes, shape) -> bytes:
    """The zfp stream, checked before zfpy allocates anything from its own header: a float32 array of
    the container's shape, and in fixed-rate mode every block's bits present. zfp's bit reader has
    no bounds checks, so in the variable-rate modes the stream is followed by zero words, which
    decode as empty blocks (one bit each; a block cut off in the middle reads at most _TAIL bytes): a
    short stream gives a wrong volume, never a read past the buffer."""
    try:
        h = zfpy.header(payload)
    except Exception as exc:  # noqa: BLE001 - zfpy raises ValueError or IndexError on a bad header
        raise CorruptFile(f"codec zfp: payload has no valid zfp header ({type(exc).__name__}); {REENCODE}") from None
    nz, ny, nx = (int(s) for s in shape)
    if h.get("type") is not np.float32 or (h.get("nz"), h.get("ny"), h.get("nx"), h.get("nw")) != (nz, ny, nx, 0):
        kind = getattr(h.get("type"), "__name__", h.get("type"))
        raise CorruptFile(f"codec zfp: the stream holds a {kind} array of {h.get('nz')}x{h.get('ny')}x{h.get('nx')}"
                          f" (w {h.get('nw')}), the header says float32 {nz}x{ny}x{nx}; {REENCODE}")
    blocks = -(-nz // 4) * -(-ny // 4) * -(-nx // 4)
    if h.get("mode") == "rate":
        maxbits = int(h["config"]["expert"]["maxbits"])
        need = (_HEADER_BITS + blocks * maxbits + 7) // 8
        if len(payload) < need:
            raise CorruptFile(f"codec zfp: fixed-rate stream has {len(payload)} bytes, its {blocks} blocks need "
                              f"{need}; {REENCODE}")
        return payload
    return bytes(payload) + bytes(8 * blocks + _TAIL)


#: bits of zfp's stream header (magic, metadata, short mode), before the first block
_HEADER_BITS = 96
#: zero bytes after a variable-rate stream besides 8 per block: a block cut off in the middle reads
#: at most 64 bit planes x 64 values of zeros (4096 bits) before it ends
_TAIL = 4096


class Zfp(Codec):
    name = "zfp"
    display_name = "ZFP"
    family = "float"
    table_order = 30
    defaults = {"mode": "rate", "rate": 4.0, "tolerance": 1.0, "precision": 16}

    def __init__(self, **params):
        super().__init__(**params)
        mode = self.params["mode"]
        if mode in _KNOBS:
            self.rate_knob, self.rate_knob_range, self.rate_knob_increases_size, self.rate_knob_log = _KNOBS[mode]
            self.rate_knob_integer = mode == "precision"
        else:
            self.rate_knob = None
        self.lossless = mode == "reversible"

    def check_params(self):
        mode = self.params["mode"]
        if mode not in ("rate", "accuracy", "precision", "reversible"):
            raise VolbenchError(f"codec zfp: mode must be rate, accuracy, precision or reversible, got {mode!r}")
        if mode == "rate":
            try:
                rate = float(self.params["rate"])
            except (TypeError, ValueError):
                raise VolbenchError(f"codec zfp: rate must be a number of bits per voxel, got {self.params['rate']!r}")
            if not MIN_RATE <= rate <= 32:
                raise VolbenchError(
                    f"codec zfp: rate {rate:g} is outside [{MIN_RATE:g}, 32] bits per voxel (zfpy aborts the "
                    f"process below about 0.15); for lower rates use another codec or mode: accuracy")

    def encode(self, volume: np.ndarray, info: VolumeInfo) -> Encoded:
        import zfpy

        arr = volume.astype(np.float32) if volume.dtype != np.float32 else volume
        arr = np.ascontiguousarray(arr)
        mode = self.params["mode"]
        if mode == "rate":
            payload = zfpy.compress_numpy(arr, rate=float(self.params["rate"]))
        elif mode == "accuracy":
            payload = zfpy.compress_numpy(arr, tolerance=float(self.params["tolerance"]))
        elif mode == "precision":
            payload = zfpy.compress_numpy(arr, precision=int(self.params["precision"]))
        else:
            payload = zfpy.compress_numpy(arr)
        return Encoded({"mode": mode}, payload)

    @classmethod
    def decode(cls, header, payload, shape, dtype, device="auto"):
        import zfpy

        payload = _checked_stream(zfpy, payload, shape)
        out = zfpy.decompress_numpy(payload)
        dtype = np.dtype(dtype)
        if dtype.kind in "ui":
            info = np.iinfo(dtype)
            return np.clip(np.rint(out), info.min, info.max).astype(dtype).reshape(shape)
        return out.astype(dtype).reshape(shape)

    @classmethod
    def versions(cls):
        import zfpy

        return {"zfpy": version("zfpy"), "zfp": str(getattr(zfpy, "__version__", version("zfpy")))}
