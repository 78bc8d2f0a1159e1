"""Slice-adapted 3DGS and GaussianPile trained on the training slices only.

The training is the codecs' own (volbench.gaussian_training.slicefit.train, the loop of
``SliceGaussianCodec.train_encode``) with its ``slices`` hook: each iteration draws one of the
TRAINING slices, renders it with ops.rasterize_slices (mode "3dgs" or "focus") and takes
L1 + lambda D-SSIM against it. The parameters, presets and checks are the codecs' (``GS3DSlice``,
``GaussianPile``: ``params: {preset: demo, iterations: ...}``); the file-format parameters
(quantisation, target_ratio) have no effect, nothing is written but the prediction.

What differs from the codecs, all of it reading training slices only:

* intensities are scaled to [0, 1] by the training slices' min and max;
* the training target is the volume's grid with the held-out slices set to NaN (never read:
  training draws from the training indices only; a read would turn the loss into NaN);
* initialisation (``init: data`` / ``grid``, and gs3d_slice's opacity calibration) looks at the
  training stack linearly interpolated along z onto the whole grid, so that the start fills the
  gaps the way the data-driven start fills a full volume, instead of clustering the Gaussians on
  the training planes; the calibration compares with training slices only.

Prediction: the held-out slices rendered at their z by the training renderer
(slicefit.render_stack), i.e. what the training loss measures on the training slices; the
rendered value is mapped back to the intensity scale.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..codecs.base import VolumeInfo
from ..errors import VolbenchError
from ..torchenv import resolve_device, seed_everything, set_threads
from .interp import linear_fill
from .methods import SparseMethod


class _SliceGaussianSparse(SparseMethod):
    family = "gaussian"
    trains = True
    uses_gpu = True
    codec_type: ClassVar[str] = ""

    @classmethod
    def codec_class(cls):
        from ..codecs.base import get_codec

        return get_codec(cls.codec_type)

    def __init__(self, **params):
        # the codec's parameters, presets and checks (unknown parameters included)
        try:
            self.codec = self.codec_class()(**params)
        except VolbenchError as exc:
            raise VolbenchError(f"sparse method {self.name}: {exc}") from None
        self.params = dict(self.codec.params)
        self.stats: dict = {}

    @classmethod
    def versions(cls):
        return {**super().versions(), **cls.codec_class().versions()}

    def reconstruct(self, train, ctx):
        import torch

        from ..gaussian_training import common, slicefit
        from ..gaussian_training.progress import Progress

        codec, p = self.codec, self.params
        ops = common.ops_or_raise(self.codec_type)
        device = resolve_device(ctx.device)
        set_threads(ctx.threads)
        seed_everything(ctx.seed)
        gen = torch.Generator().manual_seed(int(ctx.seed))
        D, H, W = train.shape
        vmin, vmax = common.intensity_range(train.slices)
        known = common.normalise(train.slices, vmin, vmax)  # (n_train, H, W) float32 on [0, 1]
        target = np.full((D, H, W), np.nan, dtype=np.float32)
        target[train.z] = known
        start = np.empty_like(target)  # training data only: the interpolated stack
        start[train.z] = known
        start[train.test_z] = linear_fill(known, train.z, train.test_z)
        info = VolumeInfo(name=train.dataset, spacing=train.spacing, sigma_z=train.sigma_z, modality=train.modality,
                          seed=ctx.seed, device=ctx.device, threads=ctx.threads)
        spacing_w, unit = slicefit.world_spacing(train.spacing)
        sigma_w = codec.sigma_z_physical(info) / unit
        mode = codec.render_mode
        n0 = max(1, min(int(p["n_gaussians"]), int(p["max_gaussians"])))
        init = codec.initial(start, spacing_w, n0, gen, sigma_w)
        if p.get("init_calibrate"):
            init = slicefit.calibrate_opacity(ops, init, target, spacing_w, sigma_w, mode, p, device, slices=train.z)
        prog = Progress(f"{self.name} {train.dataset} {train.label}", int(p["iterations"]), ctx.workdir,
                        bool(p.get("progress", True)))
        try:
            g, stats = slicefit.train(ops, target, spacing_w, sigma_w, mode, init, p, device, gen, prog,
                                      slices=train.z.tolist())
        finally:
            prog.close()
        self.stats = dict(stats)
        gl = {k: torch.from_numpy(g[k]).to(device) for k in ("means", "log_scales", "quats")}
        gl["alpha"] = torch.from_numpy(g["opacity"]).to(device)  # activated opacities
        scale = (vmax - vmin) or 1.0

        def rendered(zs):
            stack = slicefit.render_stack(ops, gl, D, (H, W), spacing_w, mode, sigma_w, p, device, list(zs))
            return stack.double().cpu().numpy() * scale + vmin

        self.train_fit = rendered(train.z.tolist())  # its own training slices (fit.json: fit_psnr)
        return rendered(train.test_z.tolist())


class GS3DSliceSparse(_SliceGaussianSparse):
    name = "gs3d_slice"
    codec_type = "gs3d_slice"
    display_name = "3DGS (slice-adapted)"
    table_order = 60


class GaussianPileSparse(_SliceGaussianSparse):
    name = "gaussianpile"
    codec_type = "gaussianpile"
    display_name = "GaussianPile"
    table_order = 80
