"""The codec logic shared by gaussianpile and gs3d_slice: slice training, the quantised (or raw)
Gaussian file, and decoding by voxelization."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..codecs.base import Encoded, VolumeInfo, file_size
from ..errors import CorruptFile, VolbenchError
from . import common, fileformat, slicefit
from .codec_base import GaussianCodec, check_roi, header_float, read_container
from .focus3d import focus_prepared_fixed
from .progress import Progress

FORMAT_VERSION = 1
#: assumed compressed / fixed-width size ratio of the quantised streams (rate control only)
LZMA_RATIO_ESTIMATE = 0.5

SHARED = {
    "position_lr": 6e-4, "opacity_lr": 2e-2, "scale_lr": 2e-3, "rotation_lr": 1e-3, "lr_final_factor": 0.1,
    "lambda_dssim": 0.2, "min_opacity": 0.02, "percent_dense": 0.01, "init_opacity": 0.1, "init_threshold": 0.05,
    "init_calibrate": False,
    "min_init_scale": 0.3, "cutoff": 3.0, "opacity_threshold": 1e-4, "sigma_z": None,
    "quantize": True, "position_bits": 14, "opacity_bits": 12, "scale_bits": 12, "rotation_bits": 12,
}


class SliceGaussianCodec(GaussianCodec):
    #: rendering mode of ops.rasterize_slices, and how the decoder turns Gaussians into a volume
    render_mode: ClassVar[str] = "focus"
    volume_model: ClassVar[str] = "focus"
    init_kind: ClassVar[str] = "random"

    def check_more(self) -> None:
        p = self.params
        for k in ("position_bits", "opacity_bits", "scale_bits", "rotation_bits"):
            if not 2 <= int(p[k]) <= 21:
                raise VolbenchError(f"codec {self.name}: {k} must be in [2, 21], got {p[k]}")
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
             "unit": big, "volume_model": self.volume_model, "cutoff": big, "mode": self.render_mode}
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

    def initial(self, vol01, spacing_w, n, gen):
        if self.params.get("init", self.init_kind) == "grid":
            return slicefit.init_grid(vol01, spacing_w, n, self.params, gen)
        return slicefit.init_random(vol01, spacing_w, n, self.params, gen)

    # -- encode -----------------------------------------------------------------------------------
    def encode(self, volume: np.ndarray, info: VolumeInfo) -> Encoded:
        ops, device, gen, vmin, vmax, vol01 = self._setup(volume, info)
        p = self.params
        spacing_w, unit = slicefit.world_spacing(info.spacing)
        sigma_w = self.sigma_z_physical(info) / unit
        n0 = max(1, min(int(p["n_gaussians"]), int(p["max_gaussians"])))
        init = self.initial(vol01, spacing_w, n0, gen)
        if p.get("init_calibrate"):
            init = slicefit.calibrate_opacity(ops, init, vol01, spacing_w, sigma_w, self.render_mode, p, device)
        prog = Progress(f"{self.name} {info.name}", int(p["iterations"]), info.workdir, bool(p["progress"]))
        try:
            g, stats = slicefit.train(ops, vol01, spacing_w, sigma_w, self.render_mode, init, p, device, gen, prog)
            self._last_gaussians = g
            base = {"version": FORMAT_VERSION, "vmin": vmin, "vmax": vmax, "spacing_w": list(spacing_w),
                    "sigma_z_w": float(sigma_w), "unit": float(unit), "volume_model": self.volume_model,
                    "cutoff": float(p["cutoff"]), "mode": self.render_mode}
            enc = self.pack(g, base)
            rec = render_volume(ops, enc.header, enc.payload, volume.shape, device, None, "<encode>")
            mse = float(np.mean((rec - vol01) ** 2))
            prog.log(int(p["iterations"]), float("nan"), mse, int(enc.header["n"]), stage="decoded_file")
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
    def decode(cls, header: dict[str, Any], payload: bytes, shape, dtype, device: str = "auto") -> np.ndarray:
        ops = common.ops_or_raise(cls.name)
        vals = render_volume(ops, header, payload, shape, common.resolve_device(device), None, "<payload>")
        return common.denormalise(vals, header_float(header, "vmin", "<payload>"),
                                  header_float(header, "vmax", "<payload>"), dtype)

    @classmethod
    def decode_roi(cls, path_or_bytes, roi, device: str = "auto") -> np.ndarray:
        chead, payload, shape, dtype, source = read_container(path_or_bytes, cls.name)
        box = check_roi(roi, shape)
        ops = common.ops_or_raise(cls.name)
        vals = render_volume(ops, chead, payload, shape, common.resolve_device(device), box, source)
        return common.denormalise(vals, header_float(chead, "vmin", source), header_float(chead, "vmax", source),
                                  dtype)


def render_slices(path_or_bytes, codec: str, indices=None, device: str = "auto") -> np.ndarray:
    """The axial slices as the training renderer draws them (ops.rasterize_slices with the
    file's mode and sigma_z), from a file (path or container bytes), in the volume's dtype: the
    images of the paper's 2D metrics. For gaussianpile they equal the decoded volume's slices (up
    to the cutoffs); for gs3d_slice they do not (seed 000 sec. 10, Fig. 5)."""
    import torch

    chead, payload, shape, dtype, source = read_container(path_or_bytes, codec)
    ops = common.ops_or_raise(codec)
    dev = common.resolve_device(device)
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
    gaussians.fixed.splat_fixed: the focus model's equivalent mixture (focus3d) or the Gaussians
    themselves."""
    import torch

    from ..gaussians import fixed

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
    if model == "gaussian":
        A, half_ext = fixed.prepare_fixed(t["means"], fixed.exp_fixed(t["log_scales"]), t["quats"], cutoff)
        return t["means"], A, half_ext, t["opacity"]
    raise CorruptFile(f"{source}: unknown volume_model {model!r}")


def render_volume(ops, header: dict, payload: bytes, shape, device, roi, source: str, slab: int = 32) -> np.ndarray:
    """The decoded volume (or its ROI) on the [0, 1] scale, float64, evaluated in z-slabs with
    the fixed arithmetic of gaussians/fixed.py: bit-identical for any ROI, slab, thread count or
    CPU."""
    from ..gaussians import fixed

    try:
        spacing_w = tuple(float(s) for s in header["spacing_w"])
    except (KeyError, TypeError, ValueError):
        raise CorruptFile(f"{source}: Gaussian header lacks spacing_w; re-run its encode job") from None
    cutoff = header_float(header, "cutoff", source)
    means, A, half_ext, amps = volume_gaussians(header, payload, device, source)
    shape = tuple(int(s) for s in shape)
    box = roi if roi is not None else (0, shape[0], 0, shape[1], 0, shape[2])
    out = np.empty((box[1] - box[0], box[3] - box[2], box[5] - box[4]), dtype=np.float64)
    for z in range(box[0], box[1], slab):
        z1 = min(box[1], z + slab)
        v = fixed.splat_fixed(means, A, amps, half_ext, shape, spacing_w, (0.0, 0.0, 0.0), cutoff,
                              (z, z1, box[2], box[3], box[4], box[5]))
        out[z - box[0]:z1 - box[0]] = v.cpu().numpy()
    return out
