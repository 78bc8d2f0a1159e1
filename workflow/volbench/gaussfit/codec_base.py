"""What the three Gaussian codecs share: presets, checks, device/seed set-up, analytic rate
control (target_bpp -> Gaussian budget, one training run) and region-of-interest decoding."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .. import container
from ..codecs.base import Codec, Encoded, VolumeInfo, file_size
from ..errors import CorruptFile, VolbenchError
from . import common

log = logging.getLogger("volbench.gaussfit")


class GaussianCodec(Codec):
    """Base of the trained Gaussian codecs (not registered: name is empty)."""

    uses_gpu = True
    rate_knob = "max_gaussians"
    rate_knob_integer = True
    rate_knob_log = True
    rate_knob_range = (16, 5_000_000)
    #: preset name -> values; ``defaults`` = {"preset": "demo", **PRESETS["demo"], ...}
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    #: parameters with a fixed set of values
    CHOICES: ClassVar[dict[str, tuple]] = {}

    def __init__(self, **params: Any) -> None:
        self._explicit = set(params)
        super().__init__(**params)

    def check_params(self) -> None:
        self.params = common.merge_preset(self.name, self.PRESETS, self.params, self._explicit)
        p = self.params
        for key, allowed in self.CHOICES.items():
            if p.get(key) not in allowed:
                raise VolbenchError(f"codec {self.name}: {key}={p.get(key)!r} is not one of {list(allowed)}")
        for key in ("iterations", "n_gaussians", "max_gaussians"):
            if int(p[key]) < 1:
                raise VolbenchError(f"codec {self.name}: {key} must be >= 1, got {p[key]}")
        self.check_more()

    def check_more(self) -> None:
        """Codec-specific checks."""

    @classmethod
    def versions(cls) -> dict[str, str]:
        import torch

        from ..gaussians import backend

        out = {"torch": torch.__version__, "numpy": np.__version__}
        try:
            out["gpu_ext"] = "loaded" if backend.load() is not None else "twin"
        except Exception:  # pragma: no cover - diagnostics only
            out["gpu_ext"] = "unknown"
        return out

    @classmethod
    def check_available(cls) -> None:
        common.ops_or_raise(cls.name)

    # -- set-up shared by encode --------------------------------------------------------------
    def _setup(self, volume: np.ndarray, info: VolumeInfo):
        import torch

        if volume.ndim != 3:
            raise VolbenchError(f"{info.name}: codec {self.name} needs a 3D volume, got shape {volume.shape}")
        ops = common.ops_or_raise(self.name)
        device = common.resolve_device(info.device)
        common.set_threads(info.threads)
        common.seed_everything(info.seed, device)
        gen = torch.Generator().manual_seed(int(info.seed))
        vmin, vmax = common.intensity_range(volume)
        vol01 = common.normalise(volume, vmin, vmax)
        return ops, device, gen, vmin, vmax, vol01

    # -- rate control ---------------------------------------------------------------------------
    def bytes_per_gaussian(self) -> float:
        raise NotImplementedError

    def template_header(self, volume: np.ndarray, info: VolumeInfo, n: int) -> dict:
        raise NotImplementedError

    def fixed_payload_bytes(self) -> int:
        return 0

    def params_for_target(self, target_bpp: float, volume: np.ndarray, info: VolumeInfo,
                          tolerance: float = 0.05):
        """Solve the Gaussian budget from the bytes per Gaussian and the header, train once."""
        nvox = int(volume.size)
        budget = target_bpp * nvox / 8.0
        per = self.bytes_per_gaussian()
        n = 1
        for _ in range(3):  # the header's length depends (weakly) on the digits of n
            over = file_size(Encoded(self.template_header(volume, info, n), b""), volume.shape, volume.dtype,
                             self.name) + self.fixed_payload_bytes()
            n = int(math.floor((budget - over) / per))
            if n < 1:
                raise VolbenchError(
                    f"{info.name}: codec {self.name} cannot reach {target_bpp} bpp: the header alone takes "
                    f"{8 * over / nvox:.4g} bpp; ask for a larger target_bpp"
                )
        params = dict(self.params)
        params["max_gaussians"] = n
        params["n_gaussians"] = min(int(params["n_gaussians"]), n)
        codec = type(self)(**params)
        enc = codec.encode(volume, info)
        enc, trimmed = codec.fit_to_bytes(enc, int(math.floor(budget)), volume, info)
        bpp = 8.0 * file_size(enc, volume.shape, volume.dtype, self.name) / nvox
        hit = abs(bpp - target_bpp) <= tolerance * target_bpp
        if not hit:
            log.warning("codec %s: target %.4g bpp, realised %.4g bpp with %d Gaussians (budget %d)",
                        self.name, target_bpp, bpp, enc.header.get("n", -1), n)
        report = {"target_bpp": target_bpp, "realised_bpp": bpp, "knob": "max_gaussians", "knob_value": n,
                  "hit": hit, "trials": 1, "final_gaussians": int(enc.header.get("n", -1)),
                  "trimmed_after_training": trimmed, "bytes_per_gaussian_assumed": per}
        return params, enc, report

    def fit_to_bytes(self, enc: Encoded, max_bytes: int, volume, info) -> tuple[Encoded, int]:
        """Codecs whose bytes per Gaussian are only estimated may drop Gaussians to fit."""
        return enc, 0


def read_container(path_or_bytes, codec: str) -> tuple[dict, bytes, tuple, np.dtype, str]:
    """(codec header, payload, shape, dtype, source) from a file path or container bytes."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        source = "<bytes>"
        header, payload = container.unpack(bytes(path_or_bytes), source)
    else:
        source = str(path_or_bytes)
        if not Path(path_or_bytes).exists():
            raise CorruptFile(f"{source}: compressed file does not exist; run its encode job first")
        header, payload = container.read(path_or_bytes)
    try:
        if header["codec"] != codec:
            raise CorruptFile(f"{source}: written by codec {header['codec']!r}, not {codec!r}")
        shape = tuple(int(s) for s in header["shape"])
        dtype = np.dtype(header["dtype"])
        chead = header["codec_header"]
    except (KeyError, TypeError) as exc:
        raise CorruptFile(f"{source}: header lacks {exc}; re-run its encode job") from None
    return chead, payload, shape, dtype, source


def check_roi(roi, shape) -> tuple[int, int, int, int, int, int]:
    try:
        z0, z1, y0, y1, x0, x1 = (int(v) for v in roi)
    except (TypeError, ValueError):
        raise VolbenchError(f"roi must be (z0, z1, y0, y1, x0, x1), got {roi!r}") from None
    D, H, W = shape
    if not (0 <= z0 < z1 <= D and 0 <= y0 < y1 <= H and 0 <= x0 < x1 <= W):
        raise VolbenchError(f"roi {tuple(roi)} is not a non-empty half-open box inside the volume {tuple(shape)}")
    return z0, z1, y0, y1, x0, x1


def header_float(header: dict, key: str, source: str) -> float:
    try:
        v = float(header[key])
    except (KeyError, TypeError, ValueError):
        raise CorruptFile(f"{source}: codec header lacks a valid {key!r}; re-run its encode job") from None
    if not math.isfinite(v):
        raise CorruptFile(f"{source}: codec header field {key!r} is not finite")
    return v
