"""GaussianPile: focus-aware Gaussian splatting trained on the axial slices (seed 000 sec. 4-5).

Training: one random Z slice per iteration rendered with ops.rasterize_slices(mode="focus"),
loss L1 + 0.2 D-SSIM, random initialisation of M Gaussians with spatial and opacity perturbation,
Adam with the paper's learning rates decaying exponentially to 0.1x, densify and prune (gradient
threshold 5e-5, opacity threshold 0.02); sigma_z = VolumeInfo.sigma_z, else the slice spacing dz.
File: Morton order, 14-bit positions, 12-bit opacity / log-scales / quaternion components, each
stream delta-coded and LZMA-compressed (quantize=False: raw float32, 44 bytes per Gaussian).
Decode: dequantise, then voxelize the focus-equivalent 3D Gaussians (covariance
S + sigma_z^2 n n^T, see gaussfit.focus3d), whose axial slices are the rendered slices.
"""

from __future__ import annotations

from ..gaussfit.slicecodec import SHARED, SliceGaussianCodec

PRESETS = {
    # seed 000 sec. 5.1: 30k iterations, M = 1000k, adaptive control 500..25000 every 100
    "paper": dict(SHARED, init="random", iterations=30_000, n_gaussians=1_000_000, max_gaussians=3_000_000,
                  densify_from=500, densify_until=25_000, densify_interval=100, densify_grad_threshold=5e-5,
                  log_every=500, eval_slices=16),
    # the small default (CPU twin, 24..32 x 96 x 96 in well under a minute of 2 cores): 40 iterations,
    # 400..800 Gaussians, learning rates x3 (position, scale, rotation) and x2.5 (opacity) so that
    # so few iterations move the Gaussians; everything else as the paper
    "demo": dict(SHARED, init="random", iterations=40, n_gaussians=400, max_gaussians=800,
                 position_lr=2e-3, opacity_lr=5e-2, scale_lr=6e-3, rotation_lr=3e-3,
                 densify_from=10, densify_until=30, densify_interval=5, densify_grad_threshold=5e-5,
                 log_every=10, eval_slices=4),
}


class GaussianPile(SliceGaussianCodec):
    name = "gaussianpile"
    render_mode = "focus"
    volume_model = "focus"
    init_kind = "random"
    PRESETS = PRESETS
    defaults = {"preset": "demo", **PRESETS["demo"], "progress": True}
    CHOICES = {"preset": tuple(PRESETS), "quantize": (True, False), "init": ("random", "grid")}


def decode_roi(path_or_bytes, roi, device: str = "auto"):
    """Decode only the half-open voxel box roi = (z0, z1, y0, y1, x0, x1) from a file."""
    return GaussianPile.decode_roi(path_or_bytes, roi, device)
