"""Slice-adapted 3DGS baseline (seed 000 sec. 10): Gaussians initialised on a grid filling the
interior (voxels above init_threshold), trained on the axial slices rendered with
ops.rasterize_slices(mode="3dgs") (Gaussians farther from the plane than their extent masked
out, 2D projection, depth attenuation, additive), without the focus model. Same losses,
schedules and file format as gaussianpile. Decode: the Gaussians voxelized as they are (amplitude
= opacity, covariance S; seed 000 eq. 12), which is how the paper evaluates 3DGS in 3D, so the
decoded volume's slices are not the rendered slices (the paper's point about 3DGS).

Presets, training loop and file format: the slice codec in codecs/_gaussian.py.
"""

from __future__ import annotations

from ._gaussian import SLICE_CHOICES, SliceGaussianCodec, slice_presets

PRESETS = slice_presets(init="grid", init_threshold=0.05, init_opacity=0.5, init_calibrate=True)


class GS3DSlice(SliceGaussianCodec):
    name = "gs3d_slice"
    display_name = "3DGS (slice-adapted)"
    table_order = 60
    render_mode = "3dgs"
    volume_model = "gaussian"
    init_kind = "grid"
    PRESETS = PRESETS
    defaults = {"preset": "demo", **PRESETS["demo"], "progress": True}
    CHOICES = {"preset": tuple(PRESETS), **SLICE_CHOICES}


#: decode only the half-open voxel box roi = (z0, z1, y0, y1, x0, x1) from a file
decode_roi = GS3DSlice.decode_roi
