"""Slice-supervised Gaussian training (GaussianPile, seed 000 sec. 4.3 / 5.1, and the
slice-adapted 3DGS baseline, sec. 10): each iteration renders one random axial slice with
ops.rasterize_slices and takes L1 + lambda D-SSIM against it; 3DGS-style densify and prune.

World units are in-plane pixels: spacing_w = spacing / p with p = sqrt(dy dx), so the renderer's
1/sqrt(det S_2d) normalisation (seed 000 eq. 9) does not depend on the physical unit.
Parameters: means (world), log-scales, quaternions, opacity = sigmoid(raw). Learning rates are
the paper's (position 6e-4, opacity 2e-2, scale 2e-3, rotation 1e-3); as in 3DGS the position
rate is multiplied by the scene extent L (the largest extent), i.e. 6e-4 of the volume per step.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..gaussian_ops.torch_impl import quat_to_rotmat
from . import losses
from .gset import GaussianSet, cap_growth

_EPS = 1e-4
#: the largest initial opacity of init_data
_A_MAX = 0.99


def world_spacing(spacing) -> tuple[tuple[float, float, float], float]:
    dz, dy, dx = (float(s) for s in spacing)
    unit = math.sqrt(dy * dx)
    return (dz / unit, dy / unit, dx / unit), unit


def _logit(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(_EPS, 1 - _EPS)
    return torch.log(x) - torch.log1p(-x)


def init_random(vol01: np.ndarray, spacing_w, n: int, p: dict, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """GaussianPile: M Gaussians uniformly in the bounding box (spatial perturbation), opacity
    init_opacity x U(0.5, 1.5) (opacity perturbation), isotropic scale = mean distance to the 3
    nearest neighbours (as 3DGS), identity rotation."""
    ext = torch.tensor([(s - 1) * d for s, d in zip(vol01.shape, spacing_w)], dtype=torch.float64)
    means = torch.rand(n, 3, generator=gen, dtype=torch.float64) * ext
    op = float(p["init_opacity"]) * (0.5 + torch.rand(n, generator=gen, dtype=torch.float64))
    return _finish(means, op, p)


def init_grid(vol01: np.ndarray, spacing_w, n: int, p: dict, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Slice-adapted 3DGS: Gaussians on a regular grid filling the interior (voxels above
    init_threshold), stride chosen so about n grid points fall inside; opacity from the voxel value."""
    fg = vol01 > float(p["init_threshold"])
    if not fg.any():
        fg = np.ones_like(fg)
    count = int(fg.sum())
    stride = max(1, int(math.floor((count / max(n, 1)) ** (1.0 / 3.0))))
    sub = fg[::stride, ::stride, ::stride]
    idx = np.argwhere(sub) * stride
    if len(idx) > n:
        pick = torch.randperm(len(idx), generator=gen)[:n].numpy()
        idx = idx[np.sort(pick)]
    means = torch.from_numpy(idx.astype(np.float64)) * torch.tensor(spacing_w, dtype=torch.float64)
    vals = torch.from_numpy(vol01[tuple(idx.T)].astype(np.float64))
    op = (vals * float(p["init_opacity"]) / max(float(vol01.max()), 1e-6)).clamp(0.02, 0.99) \
        if p.get("init_opacity_from_volume", True) else torch.full((len(idx),), float(p["init_opacity"]))
    return _finish(means, op, p)


def init_data(vol01: np.ndarray, spacing_w, n: int, p: dict, gen: torch.Generator, sigma_z_w: float,
              mode: str) -> dict[str, torch.Tensor]:
    """Data-driven start for a small budget (volbench's choice; the paper's random start needs
    M ~ 1000k): n voxel centres drawn with probability proportional to the normalised intensity
    (with replacement, then jittered uniformly within the voxel), so each Gaussian stands for an
    equal share E / n of the volume's energy E = sum(V) dz dy dx (world units); isotropic scale =
    mean distance to the 3 nearest neighbours (3DGS); identity rotation; opacity from that share:
    a Gaussian of scale s renders a slice-summed energy of (2 pi)^(3/2) alpha sqrt(s^2 +
    sigma_z^2) / dz in focus mode, and (2 pi)^(3/2) alpha s^2 sqrt(s^2 + sigma_z^2) / dz in 3dgs
    mode, hence alpha = (E / n) / ((2 pi)^(3/2) sqrt(s_z^2 + sigma_z^2)) (focus; / s^2 more in
    3dgs), clamped to [0.02, 0.99]. Focus mode, low-count regime: where that alpha would exceed
    0.99 (the share is more than one Gaussian can carry at scale s, focus-model notes fact 5),
    the Gaussian is stretched along the scan axis instead (s_z such that alpha = 0.99)."""
    v = np.clip(np.asarray(vol01, dtype=np.float64), 0.0, None)
    w = v.ravel()
    total = float(w.sum())
    if total <= 0:
        w = np.ones_like(w)
        total = float(w.size)
    prob = torch.from_numpy(w / w.sum())
    pick = torch.multinomial(prob, n, replacement=True, generator=gen)
    zyx = torch.stack(torch.unravel_index(pick, tuple(vol01.shape)), -1).double()
    jitter = torch.rand(n, 3, generator=gen, dtype=torch.float64) - 0.5
    sw = torch.tensor(spacing_w, dtype=torch.float64)
    hi = torch.tensor([s - 1 for s in vol01.shape], dtype=torch.float64)
    means = (zyx + jitter).clamp(torch.zeros(3, dtype=torch.float64), hi) * sw
    out = _finish(means, torch.full((n,), 0.5, dtype=torch.float64), p)
    s = out["log_scales"][:, 0].double().exp()
    share = total * float(np.prod(spacing_w)) / n
    c = (2 * math.pi) ** 1.5
    sz2 = float(sigma_z_w) ** 2
    if mode == "focus":
        # capacity: alpha <= A_MAX needs sqrt(s_z^2 + sigma_z^2) >= share / (c A_MAX); a Gaussian
        # whose share exceeds that is stretched along the scan axis (local axis 0 = z under the
        # identity rotation), which keeps its in-plane resolution
        need = share / (c * _A_MAX)
        s_z = s.clamp(min=math.sqrt(max(need * need - sz2, 0.0)))
        out["log_scales"][:, 0] = torch.log(s_z).float()
        alpha = share / (c * torch.sqrt(s_z * s_z + sz2))
    else:
        alpha = share / (c * s * s * torch.sqrt(s * s + sz2))
    out["opacity"] = _logit(alpha.clamp(0.02, _A_MAX).float())
    return out


def _finish(means: torch.Tensor, op: torch.Tensor, p: dict) -> dict[str, torch.Tensor]:
    n = len(means)
    if n > 1:
        from scipy.spatial import cKDTree

        k = min(4, n)
        d, _ = cKDTree(means.numpy()).query(means.numpy(), k=k)
        dist = torch.from_numpy(np.asarray(d)[:, 1:].mean(1) if k > 1 else np.ones(n))
    else:
        dist = torch.ones(n, dtype=torch.float64)
    dist = dist.clamp(min=float(p["min_init_scale"]))
    quats = torch.zeros(n, 4, dtype=torch.float64)
    quats[:, 0] = 1.0
    return {
        "means": means.float(),
        "log_scales": torch.log(dist)[:, None].repeat(1, 3).float(),
        "quats": quats.float(),
        "opacity": _logit(op.float().clamp(0.0, 1.0)),
    }


@torch.no_grad()
def calibrate_opacity(ops, init: dict, vol01: np.ndarray, spacing_w, sigma_z, mode, p: dict, device,
                      n_slices: int = 4, slices=None) -> dict:
    """Scale all initial opacities by the least-squares gain c = <R, V> / <R, R> between the
    rendered and the true axial slices (n_slices evenly spaced), clamped to [1e-3, 0.99]: with
    additive rendering, overlapping grid Gaussians would otherwise start several times too bright.
    slices: the axial indices it may look at (default: all; see train)."""
    D = vol01.shape[0]
    idx = _spread(D, n_slices, slices)
    g = {k: v.to(device) for k, v in init.items()}
    r = render_stack(ops, g, D, vol01.shape[1:], spacing_w, mode, sigma_z, p, device, idx).double()
    t = torch.from_numpy(np.ascontiguousarray(vol01[idx])).to(device).double()
    rr = float((r * r).sum())
    if rr <= 0:
        return init
    c = float((r * t).sum()) / rr
    op = (torch.sigmoid(init["opacity"].double()) * c).clamp(1e-3, 0.99)
    return dict(init, opacity=_logit(op.float()))


def render(ops, g: dict, cams, image_shape, spacing_w, mode, sigma_z, p) -> torch.Tensor:
    """Render slices; g["opacity"] holds raw logits, or g["alpha"] activated opacities."""
    alpha = g["alpha"] if "alpha" in g else torch.sigmoid(g["opacity"])
    return ops.rasterize_slices(g["means"], g["log_scales"], g["quats"], alpha, cams,
                                tuple(image_shape), (spacing_w[1], spacing_w[2]), mode=mode,
                                sigma_z=float(sigma_z), cutoff=float(p["cutoff"]),
                                opacity_threshold=float(p["opacity_threshold"]))


def cameras(ops, indices, spacing_w, device):
    cams = ops.axial_cameras(list(int(i) for i in indices), spacing_w)
    return cams.to(device=device, dtype=torch.float32)


@torch.no_grad()
def render_stack(ops, g: dict, depth: int, image_shape, spacing_w, mode, sigma_z, p, device,
                 indices=None, chunk: int = 8) -> torch.Tensor:
    idx = list(range(depth)) if indices is None else list(indices)
    outs = []
    for i in range(0, len(idx), chunk):
        outs.append(render(ops, g, cameras(ops, idx[i:i + chunk], spacing_w, device), image_shape, spacing_w,
                           mode, sigma_z, p))
    return torch.cat(outs, 0)


#: scale factor of 3DGS's split children (their scales are divided by it)
SPLIT_FACTOR = 1.6


def stack_energy(log_scales: torch.Tensor, quats: torch.Tensor, sigma_z: float, mode: str) -> torch.Tensor:
    """Energy (sum over all axial slices of the rendered values) of each Gaussian per unit of
    opacity, up to a constant common to all Gaussians (2 pi sqrt(2 pi) / dz) and up to the
    cutoffs. With S the world covariance, z the scan axis:
    mode "focus": a Gaussian carries 2 pi alpha opacity_r into a slice whatever its in-plane
    scale (eq. 9 normalises by sqrt(det S_2d); focus-model notes, fact 5) and opacity_r is a
    Gaussian of the slice position of variance S_zz + sigma_z^2: energy ~ sqrt(S_zz + sigma_z^2).
    mode "3dgs": peak = alpha (no normalisation), in-plane energy 2 pi alpha sqrt(det S_xy), depth
    attenuation of variance S_zz + sigma_z^2: energy ~ sqrt(det S_xy) sqrt(S_zz + sigma_z^2)
    (~ s^3; ~ s^2 in the plane: a split at s / 1.6 keeps 2 / 1.6^2 = 0.78 of it at equal alpha)."""
    S = quat_to_rotmat(quats.double())
    S = (S * torch.exp(2 * log_scales.double())[:, None, :]) @ S.transpose(-1, -2)
    e = torch.sqrt(S[:, 0, 0] + float(sigma_z) ** 2)
    if mode == "3dgs":
        e = e * torch.sqrt((S[:, 1, 1] * S[:, 2, 2] - S[:, 1, 2] ** 2).clamp_min(0.0))
    elif mode != "focus":
        raise ValueError(mode)
    return e


def split_opacity(op: torch.Tensor, parent: torch.Tensor, child: torch.Tensor) -> torch.Tensor:
    """Opacity of each of two split children such that the pair renders the parent's energy:
    alpha_child = alpha parent_energy / (2 child_energy) (stack_energy per unit alpha), capped at
    1 - 1e-4 (opacity is a sigmoid; in 3dgs mode a split of alpha > ~0.5 loses energy)."""
    return (op.double() * parent / (2.0 * child)).clamp(max=1.0 - _EPS).to(op.dtype)


def grad_to_unit(grad: torch.Tensor, spacing_w, image_shape, unit: str) -> torch.Tensor:
    """Norm of the in-plane position gradient (N,3 world units, (z, y, x)) in the unit of the
    densification threshold: "pixel" = dL/d(pixel position); "ndc" = 3DGS's screen-space
    gradient, dL/d(normalised device coordinates) = dL/d(pixel) x (W/2, H/2) (3DGS's
    backward multiplies by 0.5 W and 0.5 H), the unit of seed 000's threshold 0.00005."""
    g = grad[:, 1:] * torch.tensor([spacing_w[1], spacing_w[2]], dtype=grad.dtype, device=grad.device)
    if unit == "ndc":
        H, W = (int(s) for s in image_shape)
        g = g * torch.tensor([0.5 * H, 0.5 * W], dtype=grad.dtype, device=grad.device)
    elif unit != "pixel":
        raise ValueError(f"densify_grad_unit must be 'pixel' or 'ndc', got {unit!r}")
    return g.norm(dim=1)


def _densify_and_prune(gs: GaussianSet, avg: torch.Tensor, p: dict, L: float, gen: torch.Generator,
                       densify: bool, mode: str = "focus", sigma_z: float = 1.0) -> dict:
    """3DGS adaptive control, energy-conserving: Gaussians whose mean in-plane position gradient
    exceeds the threshold are cloned (max scale <= percent_dense L) or split (larger), then
    opacity < min_opacity is pruned; capped at max_gaussians (highest gradients first).
    Under additive rendering 3DGS's copying of the opacity doubles the local intensity
    (focus-model notes, fact 6), so here: a clone and its original get alpha / 2 each (the slices
    are unchanged); split children get split_opacity (the rendered stack keeps its energy).
    split "sample" (3DGS): two children drawn from N(mu, S), scales / 1.6. split "moment": two
    children at mu +- 0.78 s_1 v_1 along the major axis v_1, whose scale becomes s_1 / 1.6, the
    other scales kept: the pair has the parent's mean and covariance, so the rendered slices
    barely change (volbench's choice for short schedules)."""
    ev = {"cloned": 0, "split": 0, "pruned": 0}
    with torch.no_grad():
        g = gs.detached()
        n = gs.n
        if densify:
            smax = g["log_scales"].exp().max(1).values
            hot = avg >= float(p["densify_grad_threshold"])
            big = smax > float(p["percent_dense"]) * L
            clone, split = hot & ~big, hot & big
            clone, split = cap_growth(clone, split, avg, int(p["max_gaussians"]) - n)
            new = {k: [] for k in g}
            if clone.any():
                half = _logit(torch.sigmoid(g["opacity"][clone]) * 0.5)
                for k in g:
                    new[k].append(half if k == "opacity" else g[k][clone])
                # the original keeps half too (rows changed in place: same Adam state)
                gs["opacity"].data[clone] = half
            if split.any():
                R = quat_to_rotmat(g["quats"][split])
                ls = g["log_scales"][split]
                s = ls.exp()
                how = str(p.get("split", "sample"))
                if how == "moment":
                    major = s.argmax(1)
                    rows = torch.arange(len(s), device=s.device)
                    child_ls = ls.clone()
                    child_ls[rows, major] = ls[rows, major] - math.log(SPLIT_FACTOR)
                    v = R[rows, :, major]  # (K,3) the major axis in world coordinates
                    off = (math.sqrt(1.0 - 1.0 / SPLIT_FACTOR ** 2) * s[rows, major])[:, None] * v
                    offsets = [off, -off]
                else:
                    child_ls = ls - math.log(SPLIT_FACTOR)
                    offsets = []
                    for _ in range(2):
                        z = torch.randn(s.shape, generator=gen).to(s) * s
                        offsets.append((R @ z[..., None])[..., 0])
                parent_e = stack_energy(ls, g["quats"][split], sigma_z, mode)
                child_e = stack_energy(child_ls, g["quats"][split], sigma_z, mode)
                child_op = _logit(split_opacity(torch.sigmoid(g["opacity"][split]), parent_e, child_e))
                for off in offsets:
                    new["means"].append(g["means"][split] + off)
                    new["log_scales"].append(child_ls)
                    new["quats"].append(g["quats"][split])
                    new["opacity"].append(child_op)
            ev["cloned"], ev["split"] = int(clone.sum()), int(split.sum())
            if split.any():
                gs.keep(~split)
            if new["means"]:
                gs.append({k: torch.cat(v, 0) for k, v in new.items()})
        op = torch.sigmoid(gs["opacity"].detach())
        drop = op < float(p["min_opacity"])
        if bool(drop.all()):
            drop[torch.argmax(op)] = False
        if drop.any():
            gs.keep(~drop)
        ev["pruned"] = int(drop.sum())
    return ev


def _spread(depth: int, n: int, slices=None) -> np.ndarray:
    """n axial indices evenly spread over range(depth), or over the sorted `slices` when given."""
    pool = np.arange(depth) if slices is None else np.unique(np.asarray(list(slices), dtype=np.int64))
    pick = np.unique(np.linspace(0, len(pool) - 1, min(len(pool), int(n))).round().astype(int))
    return pool[pick]


def train(ops, vol01: np.ndarray, spacing_w, sigma_z_w: float, mode: str, init: dict, p: dict, device,
          gen: torch.Generator, progress, slices=None) -> tuple[dict, dict]:
    """Train on the axial slices of vol01. slices (default None: every slice): the only axial
    indices training may read, i.e. draw as an iteration's slice and log the MSE of (the
    sparse-slice task, volbench.sparse, trains on the training slices alone); the other slices of
    vol01 are never read."""
    D, H, W = (int(s) for s in vol01.shape)
    pool = None if slices is None else torch.from_numpy(np.unique(np.asarray(list(slices), dtype=np.int64)))
    if pool is not None and (len(pool) == 0 or int(pool[0]) < 0 or int(pool[-1]) >= D):
        raise ValueError(f"slices must be non-empty indices in [0, {D}), got {slices!r}")
    target = torch.from_numpy(np.ascontiguousarray(vol01)).to(device)
    ext = [(s - 1) * d for s, d in zip(vol01.shape, spacing_w)]
    L = max(max(ext), 1.0)
    lrs = {"means": float(p["position_lr"]) * L, "log_scales": float(p["scale_lr"]),
           "quats": float(p["rotation_lr"]), "opacity": float(p["opacity_lr"])}
    gs = GaussianSet({k: v.to(device) for k, v in init.items()}, lrs, eps=1e-15)
    iters = int(p["iterations"])
    # stop_at (seed 000 Table 1's "iter=10k"): a snapshot of the `iterations`-long run, i.e. the
    # same trajectory (learning-rate decay and densification scheduled for `iterations`) stopped
    # after stop_at iterations, not a shorter run with its own schedule
    last = min(iters, int(p.get("stop_at") or iters))
    accum = torch.zeros(gs.n, device=device)
    count = torch.zeros(gs.n, device=device)
    ev_all = {"cloned": 0, "split": 0, "pruned": 0}
    peak_n = gs.n
    eval_idx = _spread(D, int(p["eval_slices"]), None if pool is None else pool.numpy())
    lam = float(p["lambda_dssim"])
    unit = str(p.get("densify_grad_unit", "pixel"))
    running = []
    for it in range(1, last + 1):
        gs.set_lr_factor(float(p["lr_final_factor"]) ** ((it - 1) / max(iters - 1, 1)))
        if pool is None:
            k = int(torch.randint(0, D, (1,), generator=gen))
        else:
            k = int(pool[int(torch.randint(0, len(pool), (1,), generator=gen))])
        img = render(ops, gs.params, cameras(ops, [k], spacing_w, device), (H, W), spacing_w, mode, sigma_z_w, p)
        loss = losses.l1_dssim(img, target[k:k + 1], lam)
        gs.opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            gr = gs["means"].grad
            gnorm = grad_to_unit(gr, spacing_w, (H, W), unit) if gr is not None else torch.zeros_like(accum)
            accum += gnorm
            count += (gnorm > 0).float()
        gs.opt.step()
        running.append(float(loss.detach()))
        if it % int(p["log_every"]) == 0 or it == last or it == 1:
            stack = render_stack(ops, gs.params, D, (H, W), spacing_w, mode, sigma_z_w, p, device, eval_idx)
            mse = float(((stack - target[torch.as_tensor(eval_idx, device=device)]) ** 2).mean())
            progress.log(it, float(np.mean(running)), mse, gs.n)
            running = []
        progress.step()
        lo, hi, interval = int(p["densify_from"]), int(p["densify_until"]), int(p["densify_interval"])
        if lo <= it <= hi and it % interval == 0 and it < last:
            avg = accum / count.clamp_min(1)
            ev = _densify_and_prune(gs, avg, p, L, gen, densify=True, mode=mode, sigma_z=sigma_z_w)
            for key in ev_all:
                ev_all[key] += ev[key]
            peak_n = max(peak_n, gs.n)
            accum = torch.zeros(gs.n, device=device)
            count = torch.zeros(gs.n, device=device)
    with torch.no_grad():
        out = {
            "means": gs["means"].detach(),
            "log_scales": gs["log_scales"].detach(),
            "quats": gs["quats"].detach() / gs["quats"].detach().norm(dim=1, keepdim=True).clamp_min(1e-12),
            "opacity": torch.sigmoid(gs["opacity"].detach()),
        }
        out = {k: v.float().cpu().numpy() for k, v in out.items()}
    stats = dict(ev_all, peak_gaussians=peak_n, final_gaussians=int(len(out["means"])))
    return out, stats
