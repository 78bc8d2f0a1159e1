"""What the Gaussian codecs (volmicro, gaussianpile, gs3d_slice) share: presets and checks, the
torch set-up, analytic rate control (target_bpp -> Gaussian budget, one training run), decoding of
the whole volume or a region of interest from the container, and the slice codec of gaussianpile
and gs3d_slice (slice training, the quantised or raw Gaussian file, decoding by voxelization).
Training itself lives in volbench.gaussian_training, the operators in volbench.gaussian_ops.

Private module (leading underscore): not a codec of the registry."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .. import container
from ..errors import CorruptFile, VolbenchError
from ..gaussian_training import common, fileformat, slicefit
from ..gaussian_training.focus3d import eq12_prepared_fixed, focus_prepared_fixed
from ..gaussian_training.progress import Progress
from ..torchenv import resolve_device, seed_everything, set_threads
from .base import Codec, Encoded, VolumeInfo, file_size

log = logging.getLogger("volbench.codecs")

#: torch intra-op threads of the Gaussian decoders (GaussianCodec._decoded)
DECODE_THREADS = 1


def merge_preset(codec: str, presets: dict[str, dict[str, Any]], params: dict[str, Any],
                 explicit: set[str]) -> dict[str, Any]:
    """Values of the chosen preset, overridden by parameters the user gave explicitly."""
    name = params.get("preset", "demo")
    if name not in presets:
        raise VolbenchError(f"codec {codec}: unknown preset {name!r}; choose one of {sorted(presets)}")
    out = dict(params)
    for key, value in presets[name].items():
        if key not in explicit:
            out[key] = value
    return out


class GaussianCodec(Codec):
    """Base of the trained Gaussian codecs (not registered: name is empty)."""

    uses_gpu = True
    family = "gaussian"
    trains = True
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
        self.params = merge_preset(self.name, self.PRESETS, self.params, self._explicit)
        p = self.params
        for key, allowed in self.CHOICES.items():
            if p.get(key) not in allowed:
                raise VolbenchError(f"codec {self.name}: {key}={p.get(key)!r} is not one of {list(allowed)}")
        for key in ("iterations", "n_gaussians", "max_gaussians"):
            if int(p[key]) < 1:
                raise VolbenchError(f"codec {self.name}: {key} must be >= 1, got {p[key]}")
        if p.get("target_ratio") is not None and not float(p["target_ratio"]) > 0:
            raise VolbenchError(f"codec {self.name}: target_ratio must be > 0 (original bytes / file bytes) or null")
        if p.get("init_fraction") is not None and not 0 < float(p["init_fraction"]) <= 1:
            raise VolbenchError(f"codec {self.name}: init_fraction must be in (0, 1] or null")
        self.check_more()

    def check_more(self) -> None:
        """Codec-specific checks."""

    @classmethod
    def versions(cls) -> dict[str, str]:
        import torch

        from ..gaussian_ops import backend, ops
        from ..torchenv import resolve_device

        out = {"torch": torch.__version__, "numpy": np.__version__}
        try:
            out["gpu_ext"] = "loaded" if backend.load() is not None else "twin"
            # what trains and renders on the default device: cuda, cpu (compiled) or twin
            out["gaussian_backend"] = ops.backend_name(resolve_device("auto"))
        except Exception:  # pragma: no cover - diagnostics only
            out["gpu_ext"] = out.get("gpu_ext", "unknown")
            out["gaussian_backend"] = "unknown"
        return out

    @classmethod
    def check_available(cls) -> None:
        common.ops_or_raise(cls.name)

    @classmethod
    def file_stats(cls, header: dict[str, Any]) -> dict[str, Any]:
        """The final Gaussian count: how many the file holds (after any trimming to the budget)."""
        return {"n_gaussians": int(header["n"])} if "n" in header else {}

    # -- set-up shared by encode --------------------------------------------------------------
    def _setup(self, volume: np.ndarray, info: VolumeInfo):
        import torch

        if volume.ndim != 3:
            raise VolbenchError(f"{info.name}: codec {self.name} needs a 3D volume, got shape {volume.shape}")
        ops = common.ops_or_raise(self.name)
        device = resolve_device(info.device)
        set_threads(info.threads)
        seed_everything(info.seed)
        gen = torch.Generator().manual_seed(int(info.seed))
        vmin, vmax = common.intensity_range(volume)
        vol01 = common.normalise(volume, vmin, vmax)
        return ops, device, gen, vmin, vmax, vol01

    # -- decode -----------------------------------------------------------------------------------
    @classmethod
    def render(cls, ops, header: dict, payload: bytes, shape, device, roi, source: str, slab: int = 32) -> np.ndarray:
        """The decoded volume (or its ROI) on the [0, 1] scale, float64, evaluated in z-slabs."""
        raise NotImplementedError

    @classmethod
    def decode(cls, header: dict[str, Any], payload: bytes, shape, dtype, device: str = "auto") -> np.ndarray:
        return cls._decoded(header, payload, shape, dtype, device, None, "<payload>")

    @classmethod
    def decode_roi(cls, path_or_bytes, roi, device: str = "auto") -> np.ndarray:
        """Decode only the half-open voxel box roi = (z0, z1, y0, y1, x0, x1) from a file (a path or
        the container bytes); returns it in the volume's dtype."""
        chead, payload, shape, dtype, source = read_container(path_or_bytes, cls.name)
        return cls._decoded(chead, payload, shape, dtype, device, check_roi(roi, shape), source)

    @classmethod
    def _decoded(cls, header, payload, shape, dtype, device, box, source: str) -> np.ndarray:
        import torch

        ops = common.ops_or_raise(cls.name)
        # one intra-op thread (restored after): the fixed-arithmetic splat is many small torch ops,
        # and when decode jobs run side by side on few cores (the workflow's cells) torch's thread
        # pool waits on descheduled threads: GaussianPile's ultrasound decode took 72 s wall (51 s
        # CPU) with 2 threads on a loaded 2-core machine against 6-7 s with one. The values do not
        # depend on the thread count (gaussian_ops/fixed.py).
        threads = torch.get_num_threads()
        torch.set_num_threads(DECODE_THREADS)
        try:
            vals = cls.render(ops, header, payload, shape, resolve_device(device), box, source)
        finally:
            torch.set_num_threads(threads)
        return common.denormalise(vals, header_float(header, "vmin", source), header_float(header, "vmax", source),
                                  dtype)

    # -- rate control ---------------------------------------------------------------------------
    def bytes_per_gaussian(self) -> float:
        raise NotImplementedError

    def template_header(self, volume: np.ndarray, info: VolumeInfo, n: int) -> dict:
        raise NotImplementedError

    def fixed_payload_bytes(self) -> int:
        return 0

    def gaussians_for_bytes(self, budget: float, volume: np.ndarray, info: VolumeInfo, what: str) -> int:
        """The Gaussian budget of a file of at most `budget` bytes: floor((budget - container and
        header bytes) / bytes_per_gaussian)."""
        nvox = int(volume.size)
        per = self.bytes_per_gaussian()
        n = 1
        for _ in range(3):  # the header's length depends (weakly) on the digits of n
            over = file_size(Encoded(self.template_header(volume, info, n), b""), volume.shape, volume.dtype,
                             self.name) + self.fixed_payload_bytes()
            n = int(math.floor((budget - over) / per))
            if n < 1:
                raise VolbenchError(
                    f"{info.name}: codec {self.name} cannot reach {what}: the header alone takes "
                    f"{8 * over / nvox:.4g} bpp; ask for a larger budget"
                )
        return n

    def budget_params(self, n: int) -> dict[str, Any]:
        """The parameters for a budget of n Gaussians: max_gaussians = n, and n_gaussians =
        init_fraction x n when init_fraction is set, else min(n_gaussians, n)."""
        params = dict(self.params)
        params["max_gaussians"] = n
        frac = params.get("init_fraction")
        params["n_gaussians"] = max(1, int(round(float(frac) * n))) if frac else min(int(params["n_gaussians"]), n)
        return params

    def encode(self, volume: np.ndarray, info: VolumeInfo) -> Encoded:
        """Train and write the file; with ``target_ratio`` (original bytes / file bytes, the way
        seed 000 Table 2 reports rates) the Gaussian budget is solved from the file format first,
        as for target_bpp, and the file trimmed to the budget if it comes out larger."""
        ratio = self.params.get("target_ratio")
        if not ratio:
            return self.train_encode(volume, info)
        budget = math.floor(volume.nbytes / float(ratio))
        n = self.gaussians_for_bytes(budget, volume, info, f"compression ratio {ratio}")
        self.params = self.budget_params(n)
        enc = self.train_encode(volume, info)
        enc, trimmed = self.fit_to_bytes(enc, int(budget), volume, info)
        if trimmed:
            log.warning("codec %s: %d of %d Gaussians dropped to fit compression ratio %s", self.name, trimmed,
                        trimmed + int(enc.header.get("n", 0)), ratio)
        return enc

    def train_encode(self, volume: np.ndarray, info: VolumeInfo) -> Encoded:
        raise NotImplementedError

    def params_for_target(self, target_bpp: float, volume: np.ndarray, info: VolumeInfo,
                          tolerance: float = 0.05):
        """Solve the Gaussian budget from the bytes per Gaussian and the header, train once."""
        nvox = int(volume.size)
        budget = target_bpp * nvox / 8.0
        per = self.bytes_per_gaussian()
        n = self.gaussians_for_bytes(budget, volume, info, f"{target_bpp} bpp")
        params = dict(self.budget_params(n), target_ratio=None)
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


# -- the slice codec of gaussianpile and gs3d_slice ----------------------------------------------
FORMAT_VERSION = 1
#: assumed compressed / fixed-width size ratio of the quantised streams (rate control only)
LZMA_RATIO_ESTIMATE = 1.0

SHARED = {
    "position_lr": 6e-4, "opacity_lr": 2e-2, "scale_lr": 2e-3, "rotation_lr": 1e-3, "lr_final_factor": 0.1,
    "lambda_dssim": 0.2, "min_opacity": 0.02, "percent_dense": 0.01, "init_opacity": 0.1, "init_threshold": 0.05,
    "init_calibrate": False, "target_ratio": None, "init_fraction": None, "densify_grad_unit": "pixel", "split": "sample",
    "min_init_scale": 0.3, "cutoff": 3.0, "opacity_threshold": 1e-4, "sigma_z": None, "stop_at": None,
    "quantize": True, "position_bits": 14, "opacity_bits": 12, "scale_bits": 12, "rotation_bits": 12,
}
#: the fixed-choice parameters of both slice codecs (besides "preset")
SLICE_CHOICES = {"quantize": (True, False), "init": ("random", "grid", "data"), "densify_grad_unit": ("pixel", "ndc"), "split": ("sample", "moment")}


def slice_presets(demo: dict[str, Any] | None = None, **base: Any) -> dict[str, dict[str, Any]]:
    """The "paper" and "demo" presets of a slice codec: SHARED, then the codec's own values
    `base` (initialisation; `demo` overrides them in the demo preset), then the schedule, which
    gaussianpile and gs3d_slice share (docs/gaussian-codecs.md, "Presets")."""
    return {
        # seed 000 sec. 5.1: 30k iterations, M = 1000k, adaptive control 500..25000 every 100 with
        # the gradient threshold 0.00005 in 3DGS's screen-space (NDC) unit, learning rates decaying
        # to 0.1x
        "paper": dict(SHARED, **base, iterations=30_000, n_gaussians=1_000_000, max_gaussians=3_000_000,
                      densify_from=500, densify_until=25_000, densify_interval=100, densify_grad_threshold=5e-5,
                      densify_grad_unit="ndc", log_every=500, eval_slices=16),
        # the default (CPU twin, 24..32 x 96 x 96, seconds to tens of seconds a cell): 600
        # iterations; with a budget (target_ratio / target_bpp) training starts from 60 % of it and
        # densifies up to it; learning rates 12-13x the paper's (10x opacity) decaying to 0.02x, so
        # that 600 iterations (the paper: 30k) reach a plateau; the paper's threshold and unit
        "demo": dict(SHARED, **{**base, **(demo or {})}, iterations=600, n_gaussians=1200, max_gaussians=2000,
                     init_fraction=0.6, position_lr=8e-3, opacity_lr=0.2, scale_lr=2.4e-2, rotation_lr=1.2e-2,
                     lr_final_factor=0.02, densify_from=50, densify_until=450, densify_interval=25,
                     densify_grad_threshold=5e-5, densify_grad_unit="ndc", log_every=20, eval_slices=4),
    }


class SliceGaussianCodec(GaussianCodec):
    #: rendering mode of ops.rasterize_slices, and how the decoder turns Gaussians into a volume
    render_mode: ClassVar[str] = "focus"
    volume_model: ClassVar[str] = "focus"
    init_kind: ClassVar[str] = "random"

    def decoded_volume_model(self) -> str:
        """What the decoder voxelises (written into the file's header): the class's
        volume_model, or the `volume_model` parameter where the codec offers a choice."""
        return str(self.params.get("volume_model") or self.volume_model)

    def check_more(self) -> None:
        p = self.params
        for k in ("position_bits", "opacity_bits", "scale_bits", "rotation_bits"):
            if not 2 <= int(p[k]) <= 21:
                raise VolbenchError(f"codec {self.name}: {k} must be in [2, 21], got {p[k]}")
        if p.get("stop_at") is not None and not 1 <= int(p["stop_at"]) <= int(p["iterations"]):
            raise VolbenchError(f"codec {self.name}: stop_at must be in [1, iterations], got {p['stop_at']}")
        if p["sigma_z"] is not None and not float(p["sigma_z"]) > 0:
            raise VolbenchError(f"codec {self.name}: sigma_z must be > 0 (physical units) or null")

    def bytes_per_gaussian(self) -> float:
        if self.params["quantize"]:
            # LZMA of the delta streams typically halves the fixed-width size (6.6..8 B per
            # Gaussian measured at 14/12/12/12 bits against 17.25 B): train with the budget of
            # this estimate, then fit_to_bytes drops the lowest-opacity Gaussians if it overshoots
            return LZMA_RATIO_ESTIMATE * fileformat.estimate_quantised_bytes(fileformat.bits_from_params(self.params))
        return float(fileformat.RAW_BYTES_PER_GAUSSIAN)

    def fixed_payload_bytes(self) -> int:
        return 24 if self.params["quantize"] else 8

    def template_header(self, volume, info, n) -> dict:
        big = -1.2345678901234567e-5
        h = {"version": FORMAT_VERSION, "vmin": big, "vmax": big, "spacing_w": [big] * 3, "sigma_z_w": big,
             "unit": big, "volume_model": self.decoded_volume_model(), "cutoff": big, "mode": self.render_mode}
        if self.params["quantize"]:
            h.update({"format": "quantised", "n": n, "bits": fileformat.bits_from_params(self.params),
                      "bbox_lo": [big] * 3, "bbox_hi": [big] * 3, "log_scale_lo": big, "log_scale_hi": big})
        else:
            h.update({"format": "raw", "n": n, "raw_dtype": "float32"})
        return h

    def sigma_z_physical(self, info: VolumeInfo) -> float:
        if self.params["sigma_z"] is not None:
            return float(self.params["sigma_z"])
        if info.sigma_z is not None:
            return float(info.sigma_z)
        return float(info.spacing[0])

    def initial(self, vol01, spacing_w, n, gen, sigma_w):
        kind = self.params.get("init", self.init_kind)
        if kind == "grid":
            return slicefit.init_grid(vol01, spacing_w, n, self.params, gen)
        if kind == "data":
            return slicefit.init_data(vol01, spacing_w, n, self.params, gen, sigma_w, self.render_mode)
        return slicefit.init_random(vol01, spacing_w, n, self.params, gen)

    # -- encode -----------------------------------------------------------------------------------
    def train_encode(self, volume: np.ndarray, info: VolumeInfo) -> Encoded:
        ops, device, gen, vmin, vmax, vol01 = self._setup(volume, info)
        p = self.params
        spacing_w, unit = slicefit.world_spacing(info.spacing)
        sigma_w = self.sigma_z_physical(info) / unit
        n0 = max(1, min(int(p["n_gaussians"]), int(p["max_gaussians"])))
        init = self.initial(vol01, spacing_w, n0, gen, sigma_w)
        if p.get("init_calibrate"):
            init = slicefit.calibrate_opacity(ops, init, vol01, spacing_w, sigma_w, self.render_mode, p, device)
        last = min(int(p["iterations"]), int(p.get("stop_at") or p["iterations"]))  # slicefit.train
        prog = Progress(f"{self.name} {info.name}", last, info.workdir, bool(p["progress"]))
        try:
            g, stats = slicefit.train(ops, vol01, spacing_w, sigma_w, self.render_mode, init, p, device, gen, prog)
            self._last_gaussians = g
            base = {"version": FORMAT_VERSION, "vmin": vmin, "vmax": vmax, "spacing_w": list(spacing_w),
                    "sigma_z_w": float(sigma_w), "unit": float(unit), "volume_model": self.decoded_volume_model(),
                    "cutoff": float(p["cutoff"]), "mode": self.render_mode}
            enc = self.pack(g, base)
            rec = self.render(ops, enc.header, enc.payload, volume.shape, device, None, "<encode>")
            mse = float(np.mean((rec - vol01) ** 2))
            prog.log(last, float("nan"), mse, int(enc.header["n"]), stage="decoded_file")
        finally:
            prog.close()
        return enc

    def pack(self, g: dict, base: dict) -> Encoded:
        if self.params["quantize"]:
            fields, payload = fileformat.pack_quantised(g["means"], g["log_scales"], g["quats"], g["opacity"],
                                                        fileformat.bits_from_params(self.params))
        else:
            fields, payload = fileformat.pack_raw(g["means"], g["log_scales"], g["quats"], g["opacity"])
        return Encoded(header={**base, **fields}, payload=payload)

    def fit_to_bytes(self, enc: Encoded, max_bytes: int, volume, info) -> tuple[Encoded, int]:
        """Drop the lowest-opacity Gaussians (bisection on the count, compression only) when the
        file is larger than the budget; returns the new encoding and how many were dropped."""
        size = file_size(enc, volume.shape, volume.dtype, self.name)
        g = getattr(self, "_last_gaussians", None)
        if size <= max_bytes or g is None:
            return enc, 0
        base = {k: v for k, v in enc.header.items()
                if k in ("version", "vmin", "vmax", "spacing_w", "sigma_z_w", "unit", "volume_model", "cutoff", "mode")}
        order = np.argsort(-g["opacity"], kind="stable")
        lo, hi, best = 1, len(order) - 1, None
        while lo <= hi:
            mid = (lo + hi) // 2
            keep = np.sort(order[:mid])
            e = self.pack({k: v[keep] for k, v in g.items()}, base)
            if file_size(e, volume.shape, volume.dtype, self.name) <= max_bytes:
                best, lo = e, mid + 1
            else:
                hi = mid - 1
        if best is None:
            return enc, 0
        return best, len(order) - int(best.header["n"])

    # -- decode -----------------------------------------------------------------------------------
    @classmethod
    def render(cls, ops, header, payload, shape, device, roi, source, slab=32):
        return render_volume(ops, header, payload, shape, device, roi, source, slab)

    @classmethod
    def rendered_slices(cls, path, device: str = "auto") -> np.ndarray:
        """Seed 000 measures 2D PSNR/SSIM "between rendered slices and ground truth slices": the
        slices this codec's renderer draws (render_slices), not the decoded volume's."""
        return render_slices(path, cls.name, None, device)


def render_slices(path_or_bytes, codec: str, indices=None, device: str = "auto") -> np.ndarray:
    """The axial slices as the training renderer draws them (ops.rasterize_slices with the
    file's mode and sigma_z), from a file (path or container bytes), in the volume's dtype: the
    images of the paper's 2D metrics. For gaussianpile they equal the decoded volume's slices (up
    to the cutoffs); for gs3d_slice they do not (seed 000 sec. 10, Fig. 5)."""
    import torch

    chead, payload, shape, dtype, source = read_container(path_or_bytes, codec)
    ops = common.ops_or_raise(codec)
    dev = resolve_device(device)
    if int(chead.get("version", -1)) != FORMAT_VERSION:
        raise CorruptFile(f"{source}: unsupported Gaussian file version {chead.get('version')!r}")
    g = fileformat.unpack_gaussians(chead, payload, source)
    t = {k: torch.from_numpy(np.ascontiguousarray(v)).to(dev) for k, v in g.items()}
    spacing_w = tuple(float(s) for s in chead["spacing_w"])
    params = {"cutoff": header_float(chead, "cutoff", source), "opacity_threshold": 1e-4}
    gl = {"means": t["means"], "log_scales": t["log_scales"], "quats": t["quats"],
          "alpha": t["opacity"]}
    stack = slicefit.render_stack(ops, gl, int(shape[0]), shape[1:], spacing_w, chead["mode"],
                                  header_float(chead, "sigma_z_w", source), params, dev, indices)
    return common.denormalise(stack.float().cpu().numpy(), header_float(chead, "vmin", source),
                              header_float(chead, "vmax", source), dtype)


def volume_gaussians(header: dict, payload: bytes, device, source: str):
    """The 3D Gaussians of the decoded volume on the [0, 1] scale, as fixed-arithmetic factors
    (A, half_ext, amplitudes, means; float64 torch, world pixel units) for
    gaussian_ops.fixed.splat_fixed: the focus model's equivalent mixture (focus3d) or the Gaussians
    themselves."""
    import torch

    from ..gaussian_ops import fixed

    if int(header.get("version", -1)) != FORMAT_VERSION:
        raise CorruptFile(f"{source}: unsupported Gaussian file version {header.get('version')!r}")
    g = fileformat.unpack_gaussians(header, payload, source)
    t = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)).to(device) for k, v in g.items()}
    cutoff = header_float(header, "cutoff", source)
    model = header.get("volume_model")
    if model == "focus":
        A, half_ext, amps = focus_prepared_fixed(t["means"], t["log_scales"], t["quats"], t["opacity"],
                                                 header_float(header, "sigma_z_w", source), cutoff)
        return t["means"], A, half_ext, amps
    if model == "eq12":
        A, half_ext, amps = eq12_prepared_fixed(t["means"], t["log_scales"], t["quats"], t["opacity"], cutoff)
        return t["means"], A, half_ext, amps
    if model == "gaussian":
        A, half_ext = fixed.prepare_fixed(t["means"], fixed.exp_fixed(t["log_scales"]), t["quats"], cutoff)
        return t["means"], A, half_ext, t["opacity"]
    raise CorruptFile(f"{source}: unknown volume_model {model!r}")


def render_volume(ops, header: dict, payload: bytes, shape, device, roi, source: str, slab: int = 32) -> np.ndarray:
    """The decoded volume (or its ROI) on the [0, 1] scale, float64, from the file's Gaussians."""
    try:
        spacing_w = tuple(float(s) for s in header["spacing_w"])
    except (KeyError, TypeError, ValueError):
        raise CorruptFile(f"{source}: Gaussian header lacks spacing_w; re-run its encode job") from None
    cutoff = header_float(header, "cutoff", source)
    means, A, half_ext, amps = volume_gaussians(header, payload, device, source)
    return splat_volume(means, A, amps, half_ext, shape, spacing_w, cutoff, roi, slab)


def splat_volume(means, A, amps, half_ext, shape, spacing, cutoff: float, roi, slab: int = 32) -> np.ndarray:
    """Evaluate prepared Gaussians (gaussian_ops.fixed.prepare_fixed factors) on the whole volume
    or the ROI box, in z-slabs, with the fixed arithmetic of gaussian_ops/fixed.py: float64 numpy,
    bit-identical for any ROI, slab, thread count or CPU."""
    from ..gaussian_ops import fixed

    shape = tuple(int(s) for s in shape)
    box = roi if roi is not None else (0, shape[0], 0, shape[1], 0, shape[2])
    out = np.empty((box[1] - box[0], box[3] - box[2], box[5] - box[4]), dtype=np.float64)
    for z in range(box[0], box[1], slab):
        z1 = min(box[1], z + slab)
        v = fixed.splat_fixed(means, A, amps, half_ext, shape, spacing, (0.0, 0.0, 0.0), cutoff,
                              (z, z1, box[2], box[3], box[4], box[5]))
        out[z - box[0]:z1 - box[0]] = v.cpu().numpy()
    return out
