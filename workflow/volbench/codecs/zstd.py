"""Lossless zstd of the raw voxel bytes: what labs archive with today."""

from __future__ import annotations

from importlib.metadata import version

import numpy as np

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

        raw = zstandard.ZstdDecompressor().decompress(payload)
        return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder(header.get("byteorder", "<"))).astype(dtype).reshape(shape)

    @classmethod
    def versions(cls):
        import zstandard

        return {"zstandard": version("zstandard"), "libzstd": zstandard.ZSTD_VERSION if isinstance(
            zstandard.ZSTD_VERSION, str) else ".".join(map(str, zstandard.ZSTD_VERSION))}
