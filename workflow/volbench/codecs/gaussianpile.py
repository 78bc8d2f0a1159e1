"""GaussianPile: focus-aware Gaussian splatting trained on the axial slices (seed 000 sec. 4-5).

Training: one random Z slice per iteration rendered with ops.rasterize_slices(mode="focus"),
loss L1 + 0.2 D-SSIM, random initialisation of M Gaussians with spatial and opacity perturbation,
Adam with the paper's learning rates decaying exponentially to 0.1x, densify and prune (gradient
threshold 5e-5, opacity threshold 0.02); sigma_z = VolumeInfo.sigma_z, else the slice spacing dz.
File: Morton order, 14-bit positions, 12-bit opacity / log-scales / quaternion components, each
stream delta-coded and LZMA-compressed (quantize=False: raw float32, 44 bytes per Gaussian).
Decode (volume_model "eq12", the default): dequantise, then voxelize the stored Gaussians as
seed 000 eq. 12 does, before the focus re-parameterisation (covariance S, amplitude
alpha / sqrt(det S_xy|z), the renderer's thin-focus normalisation; gaussian_training.focus3d);
volume_model "focus": the focus-equivalent mixture (covariance S + sigma_z^2 n n^T), whose axial
slices are the rendered slices.  The 2D metrics come from the rendered slices either way.
Presets, training loop and file format: the slice codec in codecs/_gaussian.py.
"""

from __future__ import annotations

from ._gaussian import SLICE_CHOICES, SliceGaussianCodec, slice_presets

PRESETS = slice_presets(init="random", demo={"init": "data"})


class GaussianPile(SliceGaussianCodec):
    name = "gaussianpile"
    display_name = "GaussianPile"
    table_order = 80
    render_mode = "focus"
    volume_model = "eq12"
    init_kind = "random"
    PRESETS = PRESETS
    defaults = {"preset": "demo", **PRESETS["demo"], "volume_model": "eq12", "progress": True}
    CHOICES = {"preset": tuple(PRESETS), "volume_model": ("eq12", "focus"), **SLICE_CHOICES}


#: decode only the half-open voxel box roi = (z0, z1, y0, y1, x0, x1) from a file
decode_roi = GaussianPile.decode_roi
