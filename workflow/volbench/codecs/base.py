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
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .. import container
from ..errors import REENCODE, CorruptFile, VolbenchError

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
    """Bisection on the codec's rate knob, as CompressAI's find_close does for images.

    The two ends of the knob's range are tried first: a target outside the rates they give cannot
    be reached, so the search stops there (two encodes) with the closer end, ``hit`` False and one
    warning; otherwise the bisection runs between them."""
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

    def close(t):
        return abs(t[2] - target_bpp) <= tolerance * target_bpp

    def fwd(x):
        return math.log(x) if codec.rate_knob_log else x

    def inv(y):
        return math.exp(y) if codec.rate_knob_log else y

    # the ends of the range first: the rates the knob can reach at all
    tried = [trial(lo), trial(hi)]
    best = min(tried, key=lambda t: abs(t[2] - target_bpp))
    smallest, largest = min(t[2] for t in tried), max(t[2] for t in tried)
    outside = target_bpp < smallest or target_bpp > largest
    a, b = fwd(lo), fwd(hi)
    if not close(best) and not outside:
        for _ in range(max_steps):
            mid = inv((a + b) / 2)
            if codec.rate_knob_integer and int(round(mid)) in [int(round(t[0][knob])) for t in tried]:
                break
            t = trial(mid)
            tried.append(t)
            if abs(t[2] - target_bpp) < abs(best[2] - target_bpp):
                best = t
            if close(t):
                break
            too_big = t[2] > target_bpp
            # move toward smaller files when too big
            if too_big == codec.rate_knob_increases_size:
                b = fwd(mid)
            else:
                a = fwd(mid)
            if codec.rate_knob_integer and abs(inv(b) - inv(a)) < 0.5:
                break
    params, enc, bpp = best
    hit = close(best)
    if not hit:
        why = (f"not reachable: outside the {smallest:.4g}..{largest:.4g} bpp that {knob} {lo:g}..{hi:g} gives"
               if outside else f"not reachable within {100 * tolerance:.0f}%")
        log.warning("codec %s: target %.4g bpp %s; closest %.4g bpp at %s=%s (row marked target_missed)",
                    codec.name, target_bpp, why, bpp, knob, params[knob])
    report = {"target_bpp": target_bpp, "realised_bpp": bpp, "knob": knob, "knob_value": params[knob],
              "hit": hit, "trials": len(tried), "reachable_bpp": [smallest, largest]}
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


def decoder_for(kind: str, module: str | None, allowed_modules=(), source: str = "<bytes>") -> type[Codec]:
    """The codec class that decodes a file whose header names codec type `kind` and `module`.

    A compressed file never chooses code to run: a type is looked up among volbench's own codecs
    (volbench/codecs/<kind>.py), and a header's `module` is imported only when the caller allows
    it (`allowed_modules`: the modules that the run's config names, which the decode rule passes
    on the command line; ``volbench decode-file --module``)."""
    if not module:
        return get_codec(kind)
    if module not in set(allowed_modules or ()):
        raise CorruptFile(
            f"{source}: its header says codec {kind!r} lives in module {module!r}, which volbench does not "
            "import on a file's word; if you trust that module, allow it: `volbench decode-file --module "
            f"{module} ...` (the workflow passes the `module:` of the config's codec instance)")
    return get_codec(kind, module)


# -- header checks before decoding ------------------------------------------------------------
#: the voxel types a compressed file may declare: numeric numpy dtypes (volbench's datasets are
#: uint8, uint16, int16 or float32; every codec's decoder casts to the declared type)
DECODE_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
                 "float16", "float32", "float64")
#: environment variable: the largest decoded volume in bytes (default: this machine's memory)
MAX_DECODE_BYTES_ENV = "VOLBENCH_MAX_DECODE_BYTES"
_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def max_decode_bytes() -> int:
    """The most bytes a decoded volume may take: $VOLBENCH_MAX_DECODE_BYTES, else the machine's
    physical memory (a decoder holds the whole volume in memory)."""
    env = os.environ.get(MAX_DECODE_BYTES_ENV, "").strip()
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise VolbenchError(f"{MAX_DECODE_BYTES_ENV}={env} is not a number of bytes") from None
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def check_header(header: Any, source: str = "<bytes>") -> tuple[str, tuple[int, int, int], np.dtype, dict, str | None]:
    """The container header's generic fields, checked before any allocation: (codec type, shape,
    dtype, codec header, module). Raises CorruptFile, one line naming the file, otherwise."""
    fix = f"the file is damaged or was not written by volbench; {REENCODE}"
    if not isinstance(header, dict):
        raise CorruptFile(f"{source}: header is not a JSON object; {fix}")
    missing = [k for k in ("codec", "shape", "dtype", "codec_header") if k not in header]
    if missing:
        raise CorruptFile(f"{source}: header lacks {', '.join(repr(k) for k in missing)}; {fix}")
    kind, shape, dtype, chead = header["codec"], header["shape"], header["dtype"], header["codec_header"]
    module = header.get("module")
    if not isinstance(kind, str) or not _NAME.match(kind):
        raise CorruptFile(f"{source}: header codec {kind!r} is not a codec type (letters, digits, _); {fix}")
    if module is not None and (not isinstance(module, str)
                               or not all(_NAME.match(part) for part in module.split("."))):
        raise CorruptFile(f"{source}: header module {module!r} is not a Python module path; {fix}")
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)):
        raise CorruptFile(f"{source}: header shape {shape!r} is not a volume's shape (three positive integers "
                          f"Z, Y, X); {fix}")
    if not isinstance(dtype, str) or dtype not in DECODE_DTYPES:
        raise CorruptFile(f"{source}: header dtype {dtype!r} is not a numeric voxel type (one of "
                          f"{', '.join(DECODE_DTYPES)}); {fix}")
    if not isinstance(chead, dict):
        raise CorruptFile(f"{source}: header's codec_header is not a JSON object; {fix}")
    dt = np.dtype(dtype)
    nbytes = math.prod(shape) * dt.itemsize
    limit = max_decode_bytes()
    if nbytes > limit:
        raise CorruptFile(
            f"{source}: header says shape {shape} {dtype}, {nbytes / 2**30:.3g} GiB decoded, more than the "
            f"{limit / 2**30:.3g} GiB this machine allows ({MAX_DECODE_BYTES_ENV}, default its memory); the file is "
            "damaged, or decode it on a machine with more memory")
    return kind, (int(shape[0]), int(shape[1]), int(shape[2])), dt, chead, module


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


def decode_bytes(data: bytes, source: str = "<bytes>", device: str = "auto",
                 modules=()) -> tuple[np.ndarray, dict]:
    """Decode container bytes. The header is checked before anything is allocated (check_header,
    then each codec's decode checks its own fields against the payload); a header's `module` is
    imported only when it is one of `modules` (decoder_for)."""
    header, payload = container.unpack(data, source)
    kind, shape, dtype, chead, module = check_header(header, source)
    cls = decoder_for(kind, module, modules, source)
    cls.check_available()
    try:
        out = cls.decode(chead, payload, shape, dtype, device=device)
    except CorruptFile as exc:  # the codec's own header checks: name the file
        raise CorruptFile(str(exc) if source in str(exc) else f"{source}: {exc}") from None
    except VolbenchError:
        raise
    except Exception as exc:  # a damaged payload surfaces as a library error
        raise CorruptFile(f"{source}: {kind} payload could not be decoded ({type(exc).__name__}: {exc}); "
                          f"{REENCODE}") from exc
    if out.shape != shape or out.dtype != dtype:
        raise CorruptFile(f"{source}: decoded {out.shape} {out.dtype}, header says {shape} {dtype}")
    return out, header


def decode_file(path, device: str = "auto", modules=()) -> tuple[np.ndarray, dict]:
    return decode_bytes(Path(path).read_bytes() if Path(path).exists() else _missing(path), str(path), device,
                        modules)


def _missing(path):
    raise CorruptFile(f"{path}: compressed file does not exist; run its encode job first")
