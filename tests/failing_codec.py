"""A test-only codec that really fails, for tests/test_robustness.py (named in a config by
`module: failing_codec`, with tests/ on PYTHONPATH).

It is a working lossy codec (drops the lowest bit, zlib) except on the datasets named in its
parameters: there its encoder raises MemoryError (as a codec running out of memory does), or
its decoder calls os.abort() (as a crashing native library does: the process dies of SIGABRT).
With `fail_while: PATH` its encoder fails while that file exists (a failure that goes away).
"""

from __future__ import annotations

import os
import zlib

import numpy as np

from volbench.codecs.base import Codec, Encoded, VolumeInfo


class Failing(Codec):
    name = "failing"
    defaults = {"encode_fail_on": "", "decode_abort_on": "", "fail_while": ""}

    def encode(self, volume: np.ndarray, info: VolumeInfo) -> Encoded:
        if self.params["fail_while"] and os.path.exists(self.params["fail_while"]):
            # a failure that goes away (a full disk, a busy GPU): the rerun must redo the cell
            raise RuntimeError(f"failing while {self.params['fail_while']} exists (simulated)")
        if info.name == self.params["encode_fail_on"]:
            # what numpy raises when an allocation fails
            raise MemoryError(f"Unable to allocate {volume.nbytes * 10**6} bytes (simulated, dataset {info.name})")
        coarse = (np.ascontiguousarray(volume) >> 1) << 1 if volume.dtype.kind in "ui" else volume
        payload = zlib.compress(np.ascontiguousarray(coarse).tobytes(), 6)
        return Encoded({"abort": info.name == self.params["decode_abort_on"]}, payload)

    @classmethod
    def decode(cls, header, payload, shape, dtype, device="auto"):
        if header.get("abort"):
            os.abort()
        return np.frombuffer(zlib.decompress(payload), dtype=dtype).reshape(shape).copy()

    @classmethod
    def versions(cls):
        return {"zlib": zlib.ZLIB_VERSION}
