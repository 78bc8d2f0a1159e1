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

_GS3D = dict(SHARED, init_threshold=0.05, init_opacity=0.5)

PRESETS = {
    "paper": dict(_GS3D, iterations=30_000, n_gaussians=1_000_000, max_gaussians=3_000_000,
                  densify_from=500, densify_until=25_000, densify_interval=100, densify_grad_threshold=5e-5,
                  log_every=500, eval_slices=16),
    "demo": dict(_GS3D, iterations=300, n_gaussians=1500, max_gaussians=6000,
                 densify_from=100, densify_until=250, densify_interval=50, densify_grad_threshold=5e-5,
                 log_every=50, eval_slices=8),
}


class GS3DSlice(SliceGaussianCodec):
    name = "gs3d_slice"
    render_mode = "3dgs"
    volume_model = "gaussian"
    init_kind = "grid"
    PRESETS = PRESETS
    defaults = {"preset": "demo", **PRESETS["demo"], "progress": True}
    CHOICES = {"preset": tuple(PRESETS), "quantize": (True, False)}


def decode_roi(path_or_bytes, roi, device: str = "auto"):
    """Decode only the half-open voxel box roi = (z0, z1, y0, y1, x0, x1) from a file."""
    return GS3DSlice.decode_roi(path_or_bytes, roi, device)
