"""Seed 004's own models on the sparse-slice task: InnerGS-style Gaussians and the tri-plane method.

Both are 3D Gaussians with an intensity and a semantic feature each, rendered on a slice with
seed 004's compositing rasterizer (eqs. 1-2, InnerGS's factorisation G(u,v|t) G(t):
volbench.gaussian_ops.composite.composite_slices, whose docstring fixes the compositing order,
nearest first, and the cutoffs). They are trained on the training slices alone (and, where the
dataset has a label volume, on the training slices' labels), by one loop, so that the comparison
InnerGS vs tri-plane isolates the tri-plane:

* ``innergs`` (the baseline): every attribute is a free per-Gaussian parameter: mean, log-scales,
  rotation, opacity (sigmoid), intensity (sigmoid) and K semantic logits (softmax).
* ``triplane`` (seed 004's method): positions, base log-scales and rotations are free
  per-Gaussian parameters; intensity, opacity and semantics are DECODED, and the log-scales
  modulated, from a tri-plane feature field sampled at the Gaussian's mean (see ``TriPlane``).
  Neighbouring Gaussians, also across missing slices, thus share their appearance through the
  planes and the decoder.

Choices where seed 004 is silent (docs/sparse-slices-part2.md):

* Tri-plane: three planes F_yx, F_zy, F_zx (world axes (z, y, x); seed 004's F_xy, F_yz, F_xz)
  with ``plane_channels`` = 16 channels each at ``plane_scale`` = 1 texel per voxel along each of
  the plane's axes (at least 4 texels; at 1/2, held-out PSNR on `cells` at 50 % was 1.6 dB lower
  after 100 steps), sampled bilinearly (``grid_sample``,
  align_corners) at the mean, fused by concatenation (3 x 16 = 48 features; seed 004 allows
  concatenation or a weighted sum), decoded by an MLP of ``mlp_width`` = 64 x ``mlp_layers`` = 2
  hidden ReLU layers into: intensity logit, opacity logit, K semantic logits and a log-scale
  offset of at most +-``scale_mod`` = 0.5 (tanh) per axis. Planes start at N(0, 0.1^2) and learn
  at ``lr_planes`` = 0.1 (the decoder at 0.003): at 0.01 the decoded intensities had not left
  their start after 100 steps (training slices 19.5 dB). ``plane_tv`` (default 0) adds a
  smoothness prior along z on F_zy and F_zx (mean squared texel difference); it did not raise the
  held-out PSNR in a first try (docs/sparse-slices-part2.md).
* Semantic feature s_i = softmax of its K logits (a class distribution), rendered with eq. 2;
  semantic loss = mean squared difference between the rendered map S and the one-hot labels over
  pixels and classes (the "semantic loss" of seed 004 Tables 2-3), weight ``semantic_weight`` =
  0.1 (at 1.0 it dominated the intensity loss, which shares the opacities and shapes: held-out PSNR
  on `cells` at 50 % fell by 3-6 dB); the predicted class of a pixel is argmax_k S_k.
* Intensity loss: L1 + 0.2 D-SSIM (as the slice codecs, seed 000 eq. 11) on intensities scaled
  to [0, 1] by the training slices' min and max.
* Gaussians: ``n_gaussians`` (fixed count: no densification, the same for both methods),
  initialised from the training stack linearly interpolated along z (as the slice-Gaussian
  methods of part 1): centres drawn with probability proportional to intensity + 10 % of its
  mean (so that dark tissue is covered too), jittered within the voxel; isotropic scale = mean
  distance to the 3 nearest centres; intensity = the interpolated value, opacity 0.5.
  The scale along z is kept at least ``min_z_scale`` x the mean gap between training slices
  (a clamp on the log-scale of the local axis closest to z, applied in the forward pass: with
  sparse slices a Gaussian thinner than the gap would fit its own training slice and leave the
  held-out planes empty; both methods get it).
* ``plane_z`` = "voxels" (one texel per slice along z) or "training" (as many texels along z as
  training slices, i.e. about one per gap): the coarser z axis did not help in a first try.
* Each Adam step renders ``batch_slices`` training slices drawn at random (seeded); learning rates
  decay exponentially to ``lr_final_factor`` of their start.

Output: the held-out axial slices and, for seed 004 Tables 2-3, the model rendered along the three
axes (axial: the held-out slices; coronal and sagittal: every slice, which crosses training and
held-out rows), with the semantic maps.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from ..errors import VolbenchError
from .methods import SparseMethod

AXES = ("axial", "coronal", "sagittal")


def axis_cameras(axis: str, indices, spacing, dtype=None, device=None):
    """(B,3,4) world->camera [R|t] of slices normal to ``axis`` at integer positions ``indices``;
    pixel (r, c) lands on voxel: axial (k, r, c), coronal (r, k, c), sagittal (r, c, k). Image
    shapes (H, W), (D, W), (D, H); pixel sizes (dy, dx), (dz, dx), (dz, dy)."""
    import torch

    dtype = dtype or torch.float32
    idx = torch.as_tensor(list(indices), dtype=dtype, device=device).reshape(-1)
    B = idx.numel()
    # rows of R: camera (a, b, n) from world (z, y, x)
    rows = {"axial": (1, 2, 0), "coronal": (0, 2, 1), "sagittal": (0, 1, 2)}[axis]
    cams = torch.zeros(B, 3, 4, dtype=dtype, device=device)
    for r, c in enumerate(rows):
        cams[:, r, c] = 1.0
    cams[:, 2, 3] = -idx * float(spacing[rows[2]])
    return cams


def axis_geometry(axis: str, shape, spacing):
    """(number of slices, image shape, pixel size) of the slices normal to ``axis``."""
    D, H, W = shape
    dz, dy, dx = spacing
    return {"axial": (D, (H, W), (dy, dx)), "coronal": (H, (D, W), (dz, dx)),
            "sagittal": (W, (D, H), (dz, dy))}[axis]


class TriPlane:
    """Three learnable feature planes over the volume's box and an MLP decoder (see module doc)."""

    def __init__(self, shape, extent, channels: int, scale: float, width: int, layers: int, n_out: int,
                 gen, device, z_texels: int | None = None):
        import torch

        D, H, W = shape
        sz = [max(4, int(round(s * scale))) for s in (D, H, W)]
        if z_texels:
            sz[0] = max(2, int(z_texels))
        self.extent = torch.tensor([max(e, 1e-6) for e in extent], dtype=torch.float32, device=device)
        mk = lambda a, b: torch.nn.Parameter(  # noqa: E731
            (0.1 * torch.randn(1, channels, a, b, generator=gen)).to(device))
        self.planes = [mk(sz[1], sz[2]), mk(sz[0], sz[1]), mk(sz[0], sz[2])]  # yx, zy, zx
        dims = [3 * channels] + [width] * layers + [n_out]
        self.mlp = torch.nn.Sequential(*[m for i in range(len(dims) - 1) for m in (
            torch.nn.Linear(dims[i], dims[i + 1]), torch.nn.ReLU())][:-1]).to(device)
        with torch.no_grad():  # seeded init of the decoder
            for m in self.mlp:
                if isinstance(m, torch.nn.Linear):
                    bound = 1.0 / math.sqrt(m.in_features)
                    m.weight.copy_((torch.rand(m.weight.shape, generator=gen) * 2 - 1) * bound)
                    m.bias.zero_()

    def smoothness(self):
        """Mean squared difference of neighbouring texels along z of F_zy and F_zx (a TV-like
        prior, K-planes style) so that features vary smoothly across the missing slices."""
        return sum(((pl[:, :, 1:] - pl[:, :, :-1]) ** 2).mean() for pl in self.planes[1:])

    def parameters(self):
        return list(self.planes) + list(self.mlp.parameters())

    def __call__(self, means):
        import torch
        import torch.nn.functional as F

        u = (means / self.extent) * 2 - 1  # (N,3) in [-1, 1], (z, y, x)
        z, y, x = u[:, 0], u[:, 1], u[:, 2]

        def sample(plane, row, col):  # grid_sample's grid is (x=col, y=row)
            g = torch.stack([col, row], -1)[None, None]  # (1,1,N,2)
            return F.grid_sample(plane, g, mode="bilinear", padding_mode="border", align_corners=True)[0, :, 0].T

        f = torch.cat([sample(self.planes[0], y, x), sample(self.planes[1], z, y), sample(self.planes[2], z, x)], 1)
        return self.mlp(f)


class _CompositeSparse(SparseMethod):
    family = "gaussian"
    trains = True
    uses_gpu = True
    triplane: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {
        "n_gaussians": 2000, "iterations": 200, "batch_slices": 1, "semantic_weight": 0.1,
        "lr_means": 2e-3, "lr_scales": 0.01, "lr_quats": 0.005, "lr_attr": 0.05, "lr_planes": 0.1,
        "lr_mlp": 0.003, "lr_final_factor": 0.1, "lambda_dssim": 0.2, "min_z_scale": 0.5,
        "min_init_scale": 0.5, "plane_channels": 16, "plane_scale": 1.0, "mlp_width": 64, "mlp_layers": 2,
        "scale_mod": 0.5, "plane_tv": 0.0, "plane_z": "voxels", "mode": "composite", "cutoff": 3.0, "log_every": 25, "progress": True,
    }
    _ints = ("n_gaussians", "iterations", "batch_slices", "plane_channels", "mlp_width", "mlp_layers", "log_every")

    def check_params(self):
        p = self.params
        for k in self._ints:
            if not isinstance(p[k], (int, float)) or int(p[k]) != p[k] or int(p[k]) < 1:
                raise VolbenchError(f"sparse method {self.name}: {k} must be a positive integer, got {p[k]!r}")
        for k, v in p.items():
            if k.startswith("lr") or k in ("min_z_scale", "plane_scale", "scale_mod", "cutoff", "min_init_scale"):
                if not isinstance(v, (int, float)) or not v > 0:
                    raise VolbenchError(f"sparse method {self.name}: {k} must be a positive number, got {v!r}")
        if p["plane_z"] not in ("voxels", "training"):
            raise VolbenchError(f"sparse method {self.name}: plane_z must be 'voxels' or 'training', not {p['plane_z']!r}")
        if p["mode"] not in ("composite", "additive"):
            raise VolbenchError(f"sparse method {self.name}: mode must be 'composite' or 'additive', not {p['mode']!r}")

    @classmethod
    def versions(cls):
        from ..torchenv import import_torch

        return {**super().versions(), "torch": import_torch(cls.name).__version__}

    # ------------------------------------------------------------------ model
    def _init(self, start01, spacing_w, gap_w, gen):
        import torch
        from scipy.spatial import cKDTree

        p = self.params
        n = int(p["n_gaussians"])
        v = np.clip(start01.astype(np.float64), 0, None)
        w = (v + 0.1 * max(float(v.mean()), 1e-6)).ravel()
        pick = torch.multinomial(torch.from_numpy(w / w.sum()), n, replacement=True, generator=gen)
        zyx = torch.stack(torch.unravel_index(pick, tuple(v.shape)), -1).double()
        zyx = zyx + torch.rand(n, 3, generator=gen, dtype=torch.float64) - 0.5
        hi = torch.tensor([s - 1 for s in v.shape], dtype=torch.float64)
        zyx = zyx.clamp(torch.zeros(3, dtype=torch.float64), hi)
        means = zyx * torch.tensor(spacing_w, dtype=torch.float64)
        d, _ = cKDTree(means.numpy()).query(means.numpy(), k=min(4, n))
        d = np.asarray(d).reshape(n, -1)
        dist = d[:, 1:].mean(1) if d.shape[1] > 1 else np.ones(n)
        dist = np.maximum(dist, float(p["min_init_scale"]) * min(spacing_w))
        ls = np.log(dist)[:, None].repeat(3, 1)
        ls[:, 0] = np.maximum(ls[:, 0], math.log(float(p["min_z_scale"]) * gap_w))
        idx = tuple(np.clip(np.rint(zyx.numpy()).astype(int), 0, np.array(v.shape) - 1).T)
        val = np.clip(v[idx], 0.02, 0.98)
        quats = np.zeros((n, 4))
        quats[:, 0] = 1
        f = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))  # noqa: E731
        return {"means": f(means.numpy()), "log_scales": f(ls), "quats": f(quats),
                "opacity": torch.zeros(n), "color": f(np.log(val / (1 - val)))}

    def _attributes(self, g, field, K, zmin_log):
        """Activated per-Gaussian attributes (means, log_scales, quats, opacity, colour, semantics)."""
        import torch

        ls = g["log_scales"]
        if field is not None:
            out = field(g["means"])
            col_l, op_l, sem_l = out[:, 0], out[:, 1], out[:, 2:2 + K]
            ls = ls + float(self.params["scale_mod"]) * torch.tanh(out[:, 2 + K:5 + K])
        else:
            col_l, op_l, sem_l = g["color"], g["opacity"], g.get("semantics")
        # the local axis closest to z keeps a scale >= min_z_scale x gap (see module doc)
        q = g["quats"] / g["quats"].norm(dim=1, keepdim=True).clamp_min(1e-12)
        from ..gaussian_ops.torch_impl import quat_to_rotmat

        Rz = quat_to_rotmat(q)[:, 0, :].abs()  # |world z component| of each local axis
        zaxis = torch.nn.functional.one_hot(Rz.argmax(1), 3).bool()
        ls = torch.where(zaxis, ls.clamp(min=zmin_log), ls)
        sem = None if sem_l is None or K == 0 else torch.softmax(sem_l, 1)
        return g["means"], ls, q, torch.sigmoid(op_l), torch.sigmoid(col_l), sem

    def reconstruct(self, train, ctx):
        import torch

        from ..gaussian_ops.composite import composite_slices
        from ..gaussian_training import losses, slicefit
        from ..gaussian_training.progress import Progress
        from ..torchenv import resolve_device, seed_everything, set_threads
        from .interp import linear_fill

        p = self.params
        device = resolve_device(ctx.device)
        set_threads(ctx.threads)
        seed_everything(ctx.seed)
        gen = torch.Generator().manual_seed(int(ctx.seed))
        D, H, W = train.shape
        lo, hi = float(train.slices.min()), float(train.slices.max())
        scale = (hi - lo) or 1.0
        known = ((train.slices.astype(np.float32) - lo) / scale).astype(np.float32)
        start = np.empty((D, H, W), np.float32)
        start[train.z] = known
        start[train.test_z] = linear_fill(known, train.z, train.test_z)
        spacing_w, _unit = slicefit.world_spacing(train.spacing)
        gap_w = float(np.mean(np.diff(train.z))) * spacing_w[0]
        zmin_log = math.log(float(p["min_z_scale"]) * gap_w)
        labels = getattr(train, "labels", None)
        K = int(getattr(train, "n_classes", 0) or 0) if labels is not None else 0

        init = self._init(start, spacing_w, gap_w, gen)
        g = {k: torch.nn.Parameter(v.to(device)) for k, v in init.items()}
        field = None
        groups = [{"params": [g["means"]], "lr": float(p["lr_means"]) * max(D * spacing_w[0], H * spacing_w[1],
                                                                           W * spacing_w[2])},
                  {"params": [g["log_scales"]], "lr": float(p["lr_scales"])},
                  {"params": [g["quats"]], "lr": float(p["lr_quats"])}]
        if self.triplane:
            extent = [(s - 1) * d for s, d in zip((D, H, W), spacing_w)]
            field = TriPlane((D, H, W), extent, int(p["plane_channels"]), float(p["plane_scale"]),
                             int(p["mlp_width"]), int(p["mlp_layers"]), 2 + K + 3, gen, device,
                             z_texels=len(train.z) if p["plane_z"] == "training" else None)
            # the decoder's intensity starts near the interpolated stack's mean, not 0.5
            with torch.no_grad():
                last = field.mlp[-1]
                last.bias[0] = float(np.log(np.clip(start.mean(), 0.02, 0.98) / (1 - np.clip(start.mean(), 0.02, 0.98))))
            groups += [{"params": field.planes, "lr": float(p["lr_planes"])},
                       {"params": list(field.mlp.parameters()), "lr": float(p["lr_mlp"])}]
            del g["color"], g["opacity"]
        else:
            if K:
                g["semantics"] = torch.nn.Parameter(torch.zeros(len(init["means"]), K, device=device))
            groups += [{"params": [g[k] for k in ("opacity", "color", *(("semantics",) if K else ()))],
                        "lr": float(p["lr_attr"])}]
        for gr in groups:
            gr["base_lr"] = gr["lr"]
        opt = torch.optim.Adam(groups, betas=(0.9, 0.999), eps=1e-15)

        target = torch.from_numpy(known).to(device)
        onehot = None
        if K:
            lab = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
            onehot = torch.nn.functional.one_hot(lab, K).permute(0, 3, 1, 2).float()  # (n,K,H,W)
        ps = (spacing_w[1], spacing_w[2])
        iters = int(p["iterations"])
        bs = min(int(p["batch_slices"]), len(train.z))
        lam, wsem = float(p["lambda_dssim"]), float(p["semantic_weight"])
        tv = float(p["plane_tv"])
        prog = Progress(f"{self.name} {train.dataset} {train.label}", iters, ctx.workdir, bool(p["progress"]))

        def render(axis, idx, attrs, with_sem=True):
            m, ls, q, op, col, sem = attrs
            n_ax, shape, pix = axis_geometry(axis, (D, H, W), spacing_w)
            cams = axis_cameras(axis, idx, spacing_w, device=device)
            return composite_slices(m, ls, q, op, col, cams, shape, pix, features=sem if with_sem else None,
                                    mode=p["mode"], cutoff=float(p["cutoff"]))

        running = []
        try:
            for it in range(1, iters + 1):
                f = float(p["lr_final_factor"]) ** ((it - 1) / max(iters - 1, 1))
                for gr in opt.param_groups:
                    gr["lr"] = gr["base_lr"] * f
                pick = torch.randperm(len(train.z), generator=gen)[:bs]
                zs = train.z[pick.numpy()]
                attrs = self._attributes(g, field, K, zmin_log)
                r = render("axial", zs.tolist(), attrs, with_sem=bool(K))
                loss = losses.l1_dssim(r.image, target[pick.to(device)], lam)
                if field is not None and tv > 0:
                    loss = loss + tv * field.smoothness()
                if K:
                    loss = loss + wsem * ((r.semantics - onehot[pick.to(device)]) ** 2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                running.append(float(loss.detach()))
                if it % int(p["log_every"]) == 0 or it == iters or it == 1:
                    mse = float(((r.image.detach() - target[pick.to(device)]) ** 2).mean())
                    prog.log(it, float(np.mean(running)), mse, len(init["means"]))
                    running = []
                prog.step()
        finally:
            prog.close()

        with torch.no_grad():
            attrs = self._attributes(g, field, K, zmin_log)
            self.renders = {}
            for axis in AXES:
                n_ax, shape, _pix = axis_geometry(axis, (D, H, W), spacing_w)
                idx = train.test_z.tolist() if axis == "axial" else list(range(n_ax))
                imgs, sems = [], []
                for i in range(0, len(idx), 16):
                    r = render(axis, idx[i:i + 16], attrs, with_sem=bool(K))
                    imgs.append(r.image.double().cpu().numpy() * scale + lo)
                    if K:
                        sems.append(r.semantics.float().cpu().numpy())
                self.renders[axis] = {"image": np.concatenate(imgs), "index": np.asarray(idx, dtype=np.int64),
                                      "semantics": np.concatenate(sems) if K else None}
            r = render("axial", train.z.tolist(), attrs, with_sem=False)
            self.train_fit = r.image.double().cpu().numpy() * scale + lo
        self.stats = {"n_gaussians": int(len(init["means"])), "n_classes": K, "triplane": self.triplane,
                      "train_slices_per_step": bs, "min_z_scale_world": float(p["min_z_scale"]) * gap_w}
        return self.renders["axial"]["image"]


class InnerGSSparse(_CompositeSparse):
    name = "innergs"
    display_name = "InnerGS"
    table_order = 90
    triplane = False


class TriPlaneSparse(_CompositeSparse):
    name = "triplane"
    display_name = "Tri-plane 3DGS"
    table_order = 100
    triplane = True
