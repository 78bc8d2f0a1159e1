"""The codec interface, the registry, and rate control (target_bpp by bisection).

A codec is a subclass of :class:`Codec` in its own module ``volbench/codecs/<name>.py`` with
``name = "<name>"``. :func:`get_codec` imports that module on first use, so adding a codec
is one new file plus a config entry; a codec living outside volbench is named in config by
``module: package.module`` instead.

Encoding produces a header (JSON-serialisable dict) and a payload (bytes); the framework
wraps both in the container (volbench.container) together with the volume's shape and
dtype. Decoding receives exactly that header and payload, nothing else.

A codec also describes itself to the tables and figures (``display_name``, ``family``,
``table_order``, ``trains``; :meth:`Codec.describe`): the encode step records that description in
encode.json, scoring copies it into every summary row, and volbench.paper reads it from there.
"""

from __future__ import annotations

import importlib
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .. import container
from ..errors import CorruptFile, VolbenchError

log = logging.getLogger("volbench.codecs")


@dataclass
class VolumeInfo:
    """What an encoder may know about the volume besides its voxels (from meta.json)."""

    name: str = "volume"
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)  # Z, Y, X (Z = scan axis)
    sigma_z: float | None = None
    modality: str = "unknown"
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1"
    threads: int = 1
    workdir: Path | None = None  # where an encoder may write side files (training history)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Encoded:
    header: dict[str, Any]
    payload: bytes


class Codec:
    """Base class. Subclasses set the class attributes and implement encode/decode."""

    name: ClassVar[str] = ""
    #: True when every rate point reproduces the input exactly
    lossless: ClassVar[bool] = False
    #: parameter varied by target_bpp bisection, its range, and whether it is an integer
    rate_knob: ClassVar[str | None] = None
    rate_knob_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    rate_knob_integer: ClassVar[bool] = False
    #: True when a larger knob value gives a larger file
    rate_knob_increases_size: ClassVar[bool] = True
    #: bisect the knob on log scale (ratios, tolerances)
    rate_knob_log: ClassVar[bool] = False
    #: default parameters; unknown parameters are rejected
    defaults: ClassVar[dict[str, Any]] = {}
    #: whether the codec can use a GPU (the rules then request resources gpu=1)
    uses_gpu: ClassVar[bool] = False
    #: how the tables and figures present the codec (see describe): the method's name in the
    #: papers' tables (default: ``name``); its family, which fixes the hue of its colour in every
    #: figure ("video", "wavelet", "float", "lossless", "neural", "gaussian", or any other word);
    #: its place in the tables when the config gives no order (smaller first); and whether it
    #: trains (writes a history.csv, see volbench.history, for the training-dynamics figure)
    display_name: ClassVar[str] = ""
    family: ClassVar[str] = "other"
    table_order: ClassVar[int] = 1000
    trains: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise VolbenchError(
                f"codec {self.name}: unknown parameter(s) {unknown}; known: {sorted(self.defaults)}"
            )
        self.params = {**self.defaults, **params}
        self.check_params()

    def check_params(self) -> None:
        """Raise VolbenchError for invalid parameter values."""

    # -- the interface -------------------------------------------------------------------
    def encode(self, volume: np.ndarray, info: VolumeInfo) -> Encoded:
        raise NotImplementedError

    @classmethod
    def decode(cls, header: dict[str, Any], payload: bytes, shape: tuple[int, ...], dtype: np.dtype,
               device: str = "auto") -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def versions(cls) -> dict[str, str]:
        """Versions of the libraries this codec uses, recorded next to every result."""
        return {}

    @classmethod
    def check_available(cls) -> None:
        """Raise CodecUnavailable naming what to install when a system dependency is missing."""

    @classmethod
    def rendered_slices(cls, path, device: str = "auto") -> np.ndarray | None:
        """The axial images the codec's own renderer draws from the compressed file alone
        (shape and dtype of the volume), for codecs whose paper measures its 2D metrics on
        rendered slices rather than on the decoded volume (seed 000's slice codecs); the score
        job then takes the 2D PSNR/SSIM from them (summary column metrics_2d_source).  None (the
        default): the 2D metrics use the axial slices of the decoded volume."""
        return None

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """The codec's presentation, as written to encode.json and every summary row."""
        return {"display_name": cls.display_name or cls.name, "family": cls.family or "other",
                "table_order": int(cls.table_order), "trains": bool(cls.trains)}

    @classmethod
    def file_stats(cls, header: dict[str, Any]) -> dict[str, Any]:
        """Figures of an encoded file that the tables need besides the metrics (e.g. the final
        Gaussian count, ``n_gaussians``), from its codec header; written to encode.json and the
        summary row. Every key must be a column of volbench.summary.COLUMNS."""
        return {}

    def params_for_target(self, target_bpp: float, volume: np.ndarray, info: VolumeInfo,
                          tolerance: float = 0.05) -> tuple[dict[str, Any], Encoded, dict[str, Any]]:
        """Find parameters whose file lands within `tolerance` of `target_bpp` (bisection).

        Returns (params, encoded, report). Codecs whose encode is expensive (training)
        override this with an analytic solution. The default bisects ``rate_knob``.
        """
        return bisect_rate(self, target_bpp, volume, info, tolerance)


def file_size(enc: Encoded, shape: tuple[int, ...], dtype: np.dtype, codec: str) -> int:
    return len(container.pack(_full_header(codec, enc.header, shape, dtype), enc.payload))


def _full_header(codec: str, header: dict[str, Any], shape, dtype) -> dict[str, Any]:
    return {"codec": codec, "shape": [int(s) for s in shape], "dtype": np.dtype(dtype).name, "codec_header": header}


def bisect_rate(codec: Codec, target_bpp: float, volume: np.ndarray, info: VolumeInfo,
                tolerance: float = 0.05, max_steps: int = 24):
    """Bisection on the codec's rate knob, as CompressAI's find_close does for images."""
    knob = codec.rate_knob
    if knob is None:
        raise VolbenchError(f"codec {codec.name} has no rate knob: target_bpp is not supported")
    nvox = volume.size
    lo, hi = codec.rate_knob_range
    base = {k: v for k, v in codec.params.items()}

    def trial(value):
        if codec.rate_knob_integer:
            value = int(round(value))
        params = {**base, knob: value}
        c = type(codec)(**params)
        enc = c.encode(volume, info)
        bpp = 8.0 * file_size(enc, volume.shape, volume.dtype, codec.name) / nvox
        log.info("target_bpp %.4g: %s=%s -> %.4g bpp", target_bpp, knob, value, bpp)
        return params, enc, bpp

    tried = []

    def fwd(x):
        return math.log(x) if codec.rate_knob_log else x

    def inv(y):
        return math.exp(y) if codec.rate_knob_log else y

    a, b = fwd(lo), fwd(hi)
    best = None
    for _ in range(max_steps):
        mid = inv((a + b) / 2)
        if codec.rate_knob_integer and tried and int(round(mid)) in [int(round(t[0][knob])) for t in tried]:
            break
        params, enc, bpp = trial(mid)
        tried.append((params, enc, bpp))
        if best is None or abs(bpp - target_bpp) < abs(best[2] - target_bpp):
            best = (params, enc, bpp)
        if abs(bpp - target_bpp) <= tolerance * target_bpp:
            break
        too_big = bpp > target_bpp
        # move toward smaller files when too big
        if too_big == codec.rate_knob_increases_size:
            b = fwd(mid)
        else:
            a = fwd(mid)
        if codec.rate_knob_integer and abs(inv(b) - inv(a)) < 0.5:
            break
    # the ends of the range, in case the target lies outside what the middle steps reached
    if abs(best[2] - target_bpp) > tolerance * target_bpp:
        for end in (lo, hi):
            params, enc, bpp = trial(end)
            if abs(bpp - target_bpp) < abs(best[2] - target_bpp):
                best = (params, enc, bpp)
    params, enc, bpp = best
    hit = abs(bpp - target_bpp) <= tolerance * target_bpp
    if not hit:
        log.warning(
            "codec %s: target %.4g bpp not reachable within %.0f%%; closest %.4g bpp at %s=%s",
            codec.name, target_bpp, 100 * tolerance, bpp, knob, params[knob],
        )
    report = {"target_bpp": target_bpp, "realised_bpp": bpp, "knob": knob, "knob_value": params[knob],
              "hit": hit, "trials": len(tried)}
    return params, enc, report


# -- registry ------------------------------------------------------------------------------
_CACHE: dict[str, type[Codec]] = {}


def get_codec(kind: str, module: str | None = None) -> type[Codec]:
    """Return the codec class of type `kind` (module volbench.codecs.<kind>, or `module`)."""
    key = module or kind
    if key in _CACHE:
        return _CACHE[key]
    modname = module or f"volbench.codecs.{kind}"
    if not kind.replace("_", "").isalnum():
        raise VolbenchError(f"invalid codec type {kind!r}: letters, digits and _ only")
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        if exc.name == modname:
            raise VolbenchError(
                f"unknown codec type {kind!r}: no module {modname}; set `codec:` to one of {available()}"
            ) from None
        raise
    for obj in vars(mod).values():
        if isinstance(obj, type) and issubclass(obj, Codec) and obj is not Codec and obj.name == kind:
            _CACHE[key] = obj
            return obj
    raise VolbenchError(f"module {modname} defines no Codec subclass with name {kind!r}")


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(p.stem for p in here.glob("*.py") if not p.stem.startswith("_") and p.stem != "base")


# -- file-level encode / decode ---------------------------------------------------------------
def encode_volume(kind: str, params: dict[str, Any], volume: np.ndarray, info: VolumeInfo,
                  module: str | None = None, tolerance: float = 0.05):
    """Encode; returns (container bytes, record). `params` may hold target_bpp."""
    cls = get_codec(kind, module)
    cls.check_available()
    params = dict(params)
    target = params.pop("target_bpp", None)
    record: dict[str, Any] = {"versions": cls.versions()}  # also imports the libraries before timing
    threads = _torch_threads()
    t0 = time.perf_counter()
    try:
        if target is not None:
            codec = cls(**params)
            params, enc, report = codec.params_for_target(float(target), volume, info, tolerance)
            record["rate_control"] = report
        else:
            codec = cls(**params)
            enc = codec.encode(volume, info)
            params = codec.params
    finally:
        _torch_threads(threads)  # codecs set info.threads; the caller's setting comes back
    seconds = time.perf_counter() - t0
    full = _full_header(cls.name, enc.header, volume.shape, volume.dtype)
    if module:  # a codec from outside volbench: the decoder must find the same module
        full["module"] = module
    data = container.pack(full, enc.payload)
    record.update({"codec": cls.name, "params": params, "encode_seconds": seconds,
                   "bytes": len(data), **cls.describe(), **cls.file_stats(enc.header)})
    return data, record


def describe(kind: str, module: str | None = None) -> dict[str, Any]:
    """The description of codec type `kind` (Codec.describe), or {} when it cannot be loaded."""
    try:
        return get_codec(kind, module).describe()
    except Exception:  # noqa: BLE001 - a codec that does not load is reported by its encode job
        return {}


def _torch_threads(restore: int | None = None) -> int | None:
    """torch's intra-op thread count (None when torch is not imported); sets it to ``restore``."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    if restore is not None:
        torch.set_num_threads(restore)
    return torch.get_num_threads()


def decode_bytes(data: bytes, source: str = "<bytes>", device: str = "auto") -> tuple[np.ndarray, dict]:
    header, payload = container.unpack(data, source)
    try:
        kind = header["codec"]
        shape = tuple(int(s) for s in header["shape"])
        dtype = np.dtype(header["dtype"])
        chead = header["codec_header"]
    except (KeyError, TypeError) as exc:
        raise CorruptFile(f"{source}: header lacks {exc}; re-run its encode job") from None
    cls = get_codec(kind, header.get("module"))
    cls.check_available()
    try:
        out = cls.decode(chead, payload, shape, dtype, device=device)
    except VolbenchError:
        raise
    except Exception as exc:  # a damaged payload surfaces as a library error
        raise CorruptFile(f"{source}: {kind} payload could not be decoded ({type(exc).__name__}: {exc})") from exc
    if out.shape != shape or out.dtype != dtype:
        raise CorruptFile(f"{source}: decoded {out.shape} {out.dtype}, header says {shape} {dtype}")
    return out, header


def decode_file(path, device: str = "auto") -> tuple[np.ndarray, dict]:
    return decode_bytes(Path(path).read_bytes() if Path(path).exists() else _missing(path), str(path), device)


def _missing(path):
    raise CorruptFile(f"{path}: compressed file does not exist; run its encode job first")
