"""VolMicro: a sparse 3D Gaussian mixture fitted to the voxels (seed 001 sec. 3, Tables 4 and 7).

Training and decoding evaluate the same function, ops.voxelize (exact up to its Mahalanobis
cutoff), not the KNN approximation of the public code. The file holds 22 bytes per Gaussian
(float16: position 6, scale 6, quaternion 8, intensity 2) after the JSON header, which carries
the Gaussian count and the intensity normalisation (vmin, vmax). ``decode_roi`` evaluates only a
sub-box of the volume from a file.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import CorruptFile, VolbenchError
from ..gaussian_training import common, fileformat, volfit
from ..gaussian_training.progress import Progress
from ._gaussian import GaussianCodec, header_float, splat_volume
from .base import Encoded, VolumeInfo

FORMAT_VERSION = 1

_SHARED = {
    "gate": "mlp", "gate_tau": 0.5, "tau_occ": 0.01, "gate_bands": 4, "gate_hidden": 64, "gate_lr": 1e-3,
    "lr": 0.01, "w_base": 1.0, "w_edge": 2.0, "lambda_sparse": 1e-3, "lambda_scale": 1e-3,
    "s_min": 1e-4, "s_max": 0.1, "size_threshold": 0.02, "prune_threshold": 1e-3, "grad_ema": 0.95,
    "clone_std": 0.01, "split_factor": 0.8, "split_offset": 0.25, "init_intensity": 0.1, "cutoff": 3.0,
    "target_ratio": None, "init_fraction": None, "clamp_scales": False,
    "lr_final_factor": 1.0, "init_knn_factor": 1.0,
    # with a byte budget of n Gaussians (target_bpp / target_ratio): densification may grow to
    # peak_factor x n (seed 001: a 28,547 peak for 20,693 final, 1.38), and Phase III prunes to
    # n after densify_until (final_gaussians, set by the budget; null: no final cap)
    "final_gaussians": None, "peak_factor": 28_547 / 20_693,
}
PRESETS = {
    # seed 001 Table 7 (and sec. 4.1): 10k iterations, N0 = 5000, densify every 100 iterations
    # between 500 and 3500, tau_grad 1e-4; max_gaussians 50k as the public code's default.
    "paper": dict(_SHARED, iterations=10_000, n_gaussians=5000, max_gaussians=50_000, init="uniform",
                  init_scale=0.01, sample_ratio=0.3, gate_iterations=1000, gate_batch=65_536,
                  densify_from=500, densify_until=3500, densify_interval=100, grad_threshold=1e-4,
                  log_every=100, crop=None),
    # the default (CPU twin, 24..32 x 96 x 96, seconds to tens of seconds a cell): 400 iterations
    # on the whole volume; with a budget (target_bpp / target_ratio) training starts from 60 % of
    # it, placed and weighted from the data (init: data), densifies up to peak_factor x it until
    # iteration 250, then Phase III prunes to it and fine-tunes 150 iterations; scales projected
    # into [s_min, s_max] instead of pruning the oversized; lr 0.03 decaying to 0.05x; a short gate
    # pre-training
    "demo": dict(_SHARED, iterations=400, n_gaussians=300, max_gaussians=600, init="data", init_fraction=0.6,
                 init_scale=None, sample_ratio=1.0, gate_iterations=100, gate_batch=8192, lr=0.03,
                 lr_final_factor=0.05, clamp_scales=True, densify_from=50, densify_until=250, densify_interval=25,
                 grad_threshold=2e-5, log_every=10, crop=None, init_knn_factor=0.5),
}


class VolMicro(GaussianCodec):
    name = "volmicro"
    display_name = "VolMicro"
    table_order = 70
    PRESETS = PRESETS
    defaults = {"preset": "demo", **PRESETS["demo"], "progress": True}
    CHOICES = {"gate": ("mlp", "threshold", "none"), "init": ("uniform", "occupied", "data"), "preset": tuple(PRESETS)}

    def check_more(self) -> None:
        p = self.params
        if not 0 < float(p["sample_ratio"]) <= 1:
            raise VolbenchError(f"codec volmicro: sample_ratio must be in (0, 1], got {p['sample_ratio']}")
        if float(p["cutoff"]) <= 0:
            raise VolbenchError("codec volmicro: cutoff must be > 0")
        if not float(p["peak_factor"]) >= 1:
            raise VolbenchError(f"codec volmicro: peak_factor must be >= 1, got {p['peak_factor']}")

    def bytes_per_gaussian(self) -> float:
        return float(fileformat.F16_BYTES_PER_GAUSSIAN)

    def budget_params(self, n: int) -> dict:
        """The budget caps the final count, not the Phase II peak: max_gaussians = peak_factor x
        n for densification, final_gaussians = n (volfit prunes to it after densify_until)."""
        params = super().budget_params(n)
        params["max_gaussians"] = max(n, int(math.ceil(float(self.params["peak_factor"]) * n)))
        params["final_gaussians"] = n
        return params

    def template_header(self, volume, info, n) -> dict:
        vmin, vmax = common.intensity_range(volume)  # exactly what encode writes
        return _header(n, vmin, vmax, info.spacing, float(self.params["cutoff"]))

    # -- encode -----------------------------------------------------------------------------------
    def train_encode(self, volume: np.ndarray, info: VolumeInfo) -> Encoded:
        ops, device, gen, vmin, vmax, vol01 = self._setup(volume, info)
        p = self.params
        spacing = tuple(float(s) for s in info.spacing)
        prog = Progress(f"volmicro {info.name}", int(p["iterations"]), info.workdir, bool(p["progress"]))
        try:
            g, stats = volfit.train(ops, vol01, spacing, p, device, gen, prog)
            header = _header(len(g["pos"]), vmin, vmax, spacing, float(p["cutoff"]))
            payload = fileformat.pack_f16(g["pos"], g["scale"], g["quat"], g["intensity"])
            # the realised quality of what the file holds (float16 parameters)
            rec = self.render(ops, header, payload, volume.shape, device, None, "<encode>")
            mse = float(np.mean((rec - vol01) ** 2))
            prog.log(int(p["iterations"]), float("nan"), mse, len(g["pos"]), stage="decoded_file")
        finally:
            prog.close()
        return Encoded(header=header, payload=payload)

    # -- decode (GaussianCodec.decode / decode_roi call render) ----------------------------------
    @classmethod
    def render(cls, ops, header: dict, payload: bytes, shape, device, roi, source: str, slab: int = 32) -> np.ndarray:
        """Voxelize the stored Gaussians (whole volume, or one ROI) on the [0, 1] scale, float64,
        with _gaussian.splat_volume (fixed arithmetic): the same function as training's
        volfit.voxelize_unit, bit-identical for any ROI, slab size, thread count or CPU."""
        import torch

        from ..gaussian_ops import fixed

        if header.get("format") != "f16" or int(header.get("version", -1)) != FORMAT_VERSION:
            raise CorruptFile(f"{source}: not a VolMicro v{FORMAT_VERSION} payload (header {header.get('format')!r})")
        try:
            n = int(header["n"])
            spacing = tuple(float(s) for s in header["spacing"])
        except (KeyError, TypeError, ValueError):
            raise CorruptFile(f"{source}: VolMicro header lacks n or spacing; re-run its encode job") from None
        if len(spacing) != 3:
            raise CorruptFile(f"{source}: VolMicro header spacing must have 3 entries")
        cutoff = header_float(header, "cutoff", source)
        g = fileformat.unpack_f16(payload, n, source)
        t = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)).to(device) for k, v in g.items()}
        shape = tuple(int(s) for s in shape)
        # volfit.to_world without the log: world means and standard deviations (basic operations only)
        extent, L = volfit.geometry(shape, spacing)
        means = t["pos"] * torch.as_tensor(extent, dtype=torch.float64, device=device)
        A, half_ext = fixed.prepare_fixed(means, t["scale"].clamp_min(1e-12) * L, t["quat"], cutoff)
        return splat_volume(means, A, t["intensity"], half_ext, shape, spacing, cutoff, roi, slab)


def _header(n, vmin, vmax, spacing, cutoff) -> dict:
    return {"version": FORMAT_VERSION, "format": "f16", "n": int(n), "vmin": float(vmin), "vmax": float(vmax),
            "spacing": [float(s) for s in spacing], "cutoff": float(cutoff)}


#: decode only the half-open voxel box roi = (z0, z1, y0, y1, x0, x1) from a VolMicro file (a path
#: or the container bytes), in the volume's dtype
decode_roi = VolMicro.decode_roi
