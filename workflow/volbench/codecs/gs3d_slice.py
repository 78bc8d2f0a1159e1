"""Slice-adapted 3DGS baseline (seed 000 sec. 10): Gaussians initialised on a grid filling the
interior (voxels above init_threshold), trained on the axial slices rendered with
ops.rasterize_slices(mode="3dgs") (Gaussians farther from the plane than their extent masked
out, 2D projection, depth attenuation, additive), without the focus model. Same losses,
schedules and file format as gaussianpile. Decode: the Gaussians voxelized as they are (amplitude
= opacity, covariance S; seed 000 eq. 12), which is how the paper evaluates 3DGS in 3D, so the
decoded volume's slices are not the rendered slices (the paper's point about 3DGS).
"""

from __future__ import annotations

from ..gaussfit.slicecodec import SHARED, SliceGaussianCodec

_GS3D = dict(SHARED, init="grid", init_threshold=0.05, init_opacity=0.5, init_calibrate=True)

PRESETS = {
    "paper": dict(_GS3D, iterations=30_000, n_gaussians=1_000_000, max_gaussians=3_000_000,
                  densify_from=500, densify_until=25_000, densify_interval=100, densify_grad_threshold=5e-5,
                  log_every=500, eval_slices=16),
    # the small default (CPU twin, 24..32 x 96 x 96 in well under a minute of 2 cores): 40 iterations,
    # 400..800 Gaussians, learning rates x3 (position, scale, rotation) and x2.5 (opacity) so that
    # so few iterations move the Gaussians; everything else as the paper
    "demo": dict(_GS3D, iterations=40, n_gaussians=400, max_gaussians=800,
                 position_lr=2e-3, opacity_lr=5e-2, scale_lr=6e-3, rotation_lr=3e-3,
                 densify_from=10, densify_until=30, densify_interval=5, densify_grad_threshold=5e-5,
                 log_every=10, eval_slices=4),
}


class GS3DSlice(SliceGaussianCodec):
    name = "gs3d_slice"
    render_mode = "3dgs"
    volume_model = "gaussian"
    init_kind = "grid"
    PRESETS = PRESETS
    defaults = {"preset": "demo", **PRESETS["demo"], "progress": True}
    CHOICES = {"preset": tuple(PRESETS), "quantize": (True, False), "init": ("random", "grid")}


def decode_roi(path_or_bytes, roi, device: str = "auto"):
    """Decode only the half-open voxel box roi = (z0, z1, y0, y1, x0, x1) from a file."""
    return GS3DSlice.decode_roi(path_or_bytes, roi, device)
