"""A codec that lives outside volbench, for tests/test_module_codec.py (named in a config by
`module: toy_codec`, with tests/ on PYTHONPATH): this module and a config entry are all it takes
for the codec to run, and to appear in the summary, the paper tables and the figures.

It keeps the `bits` most significant bits of every voxel (zlib-compressed), after a pretend
"training" that refines nothing but writes the training history every training codec writes.
"""

from __future__ import annotations

import time
import zlib

import numpy as np

from volbench import history
from volbench.codecs.base import Codec, Encoded, VolumeInfo
from volbench.metrics import psnr_from_mse


class Toy(Codec):
    name = "toy"
    # how the tables and figures present it
    display_name = "Toy codec (test)"
    family = "toy"
    table_order = 5
    trains = True
    rate_knob = "bits"
    rate_knob_range = (1, 16)
    rate_knob_integer = True
    defaults = {"bits": 4, "iterations": 5}

    def encode(self, volume: np.ndarray, info: VolumeInfo) -> Encoded:
        vol = np.ascontiguousarray(volume)
        width = 8 * vol.dtype.itemsize
        drop = max(0, width - int(self.params["bits"])) if vol.dtype.kind == "u" else 0
        coarse = (vol >> drop) << drop if drop else vol
        rng = float(vol.max()) - float(vol.min()) or 1.0
        mse = float(np.mean((vol.astype(np.float64) - coarse) ** 2)) / rng ** 2
        t0 = time.perf_counter()
        rows = [{"iteration": i, "loss": mse * (1 + 1 / i), "psnr": psnr_from_mse(mse * (1 + 1 / i)),
                 "mse": mse * (1 + 1 / i), "seconds": time.perf_counter() - t0, "stage": "train"}
                for i in range(1, int(self.params["iterations"]) + 1)]
        rows.append({"iteration": int(self.params["iterations"]), "loss": mse, "psnr": psnr_from_mse(mse),
                     "mse": mse, "seconds": time.perf_counter() - t0, "stage": "decoded_file"})
        if info.workdir is not None:
            history.write(info.workdir, rows)
        return Encoded({"drop": drop}, zlib.compress(coarse.tobytes(), 6))

    @classmethod
    def decode(cls, header, payload, shape, dtype, device="auto"):
        return np.frombuffer(zlib.decompress(payload), dtype=dtype).reshape(shape).copy()

    @classmethod
    def versions(cls):
        return {"zlib": zlib.ZLIB_VERSION}
