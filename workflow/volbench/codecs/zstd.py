"""Lossless zstd of the raw voxel bytes: what labs archive with today."""

from __future__ import annotations

from importlib.metadata import version

import numpy as np

from ..errors import REENCODE
from .base import Codec, Encoded, VolumeInfo


class Zstd(Codec):
    name = "zstd"
    lossless = True
    display_name = "Zstandard (lossless)"
    family = "lossless"
    table_order = 40
    defaults = {"level": 19, "threads": 0}

    def check_params(self):
        from ..errors import VolbenchError

        if not 1 <= int(self.params["level"]) <= 22:
            raise VolbenchError(f"codec zstd: level must be 1..22, got {self.params['level']}")

    def encode(self, volume: np.ndarray, info: VolumeInfo) -> Encoded:
        import zstandard

        cctx = zstandard.ZstdCompressor(level=int(self.params["level"]), threads=int(self.params["threads"]),
                                        write_checksum=True, write_content_size=True)
        payload = cctx.compress(np.ascontiguousarray(volume).tobytes())
        return Encoded({"level": int(self.params["level"]), "byteorder": "<"}, payload)

    @classmethod
    def decode(cls, header, payload, shape, dtype, device="auto"):
        import zstandard

        from ..errors import CorruptFile

        order = header.get("byteorder", "<")
        if order not in ("<", ">"):
            raise CorruptFile(f"codec zstd: header byteorder {order!r} is not < or >; {REENCODE}")
        expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
        # the frame says how much it holds; zstandard would allocate that much before decoding
        try:
            size = zstandard.frame_content_size(payload)
        except zstandard.ZstdError:
            raise CorruptFile(f"codec zstd: payload is not a zstd frame; {REENCODE}") from None
        if size not in (-1, expected):
            raise CorruptFile(f"codec zstd: payload holds {size} bytes, the header's shape {list(shape)} {np.dtype(dtype).name} "
                              f"needs {expected}; {REENCODE}")
        raw = zstandard.ZstdDecompressor().decompress(payload, max_output_size=expected)
        if len(raw) != expected:
            raise CorruptFile(f"codec zstd: payload decompressed to {len(raw)} bytes, expected {expected}; {REENCODE}")
        return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder(order)).astype(dtype).reshape(shape)

    @classmethod
    def versions(cls):
        import zstandard

        return {"zstandard": version("zstandard"), "libzstd": zstandard.ZSTD_VERSION if isinstance(
            zstandard.ZSTD_VERSION, str) else ".".join(map(str, zstandard.ZSTD_VERSION))}
