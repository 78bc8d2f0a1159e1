"""Distortion metrics. The rules, as documented in config/README.md:

* Data range R for every PSNR and SSIM: the ORIGINAL volume's max - min (not the dtype's range,
  which inflates 16-bit scores). A constant original (R = 0) makes PSNR/SSIM undefined: they are
  reported as NaN with a note, never a crash.
* 3D PSNR: 10 log10(R^2 / MSE) over the whole volume; inf when the reconstruction is exact.
* 2D PSNR: the mean over the slices along the scan axis Z of each slice's PSNR (same R). A slice
  reconstructed exactly counts as PSNR_CAP (100 dB) unless every slice is exact (then inf).
* SSIM: Wang et al. 2004 with a Gaussian window (sigma 1.5, 11 taps), K1 0.01, K2 0.03, population
  covariance (skimage, gaussian_weights=True, use_sample_covariance=False). 2D SSIM: mean over Z
  slices. 3D SSIM: the same on the whole volume with a 3D window. Where a side is shorter than 11,
  a uniform window of the largest odd size <= that side (at least 3) is used instead.
* Foreground: voxels of the original above min + foreground_threshold * R (VolMicro's occupancy
  rule, default 1% of the range). psnr_fg is the PSNR over those voxels; ssim_fg the mean of the 3D
  SSIM map over them.
* LPIPS (AlexNet, v0.1): slices taken from all three orientations, `slices_per_axis` per
  orientation, chosen by a seeded generator among the slices whose two sides are both >= 32 pixels
  (AlexNet's minimum); each slice scaled to [-1, 1] by the original's min and R (reconstruction
  clipped), repeated to 3 channels; the mean over the sampled slices.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

PSNR_CAP = 100.0
LPIPS_MIN_SIDE = 32


def _psnr(mse: float, rng_: float) -> float:
    if rng_ <= 0:
        return float("nan")
    if mse == 0:
        return float("inf")
    return 10.0 * math.log10(rng_ * rng_ / mse)


def psnr_3d(orig: np.ndarray, rec: np.ndarray, data_range: float) -> float:
    return _psnr(_mse(orig, rec), data_range)


def _mse(orig, rec, mask=None) -> float:
    total, count = 0.0, 0
    for z in range(orig.shape[0]):  # slice-wise: no full float copy of the volume
        d = orig[z].astype(np.float64) - rec[z].astype(np.float64)
        if mask is not None:
            d = d[mask[z]]
        total += float(np.dot(d.ravel(), d.ravel()))
        count += d.size
    return total / count if count else float("nan")


def psnr_2d(orig: np.ndarray, rec: np.ndarray, data_range: float) -> float:
    if data_range <= 0:
        return float("nan")
    vals = []
    for z in range(orig.shape[0]):
        d = orig[z].astype(np.float64) - rec[z].astype(np.float64)
        vals.append(_psnr(float(np.mean(d * d)), data_range))
    if all(math.isinf(v) for v in vals):
        return float("inf")
    return float(np.mean([min(v, PSNR_CAP) for v in vals]))


def _ssim_kwargs(shape) -> dict[str, Any]:
    side = min(shape)
    if side >= 11:
        return {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
    win = max(3, side if side % 2 == 1 else side - 1)
    return {"gaussian_weights": False, "win_size": win, "use_sample_covariance": False}


def ssim(orig: np.ndarray, rec: np.ndarray, data_range: float, full: bool = False):
    from skimage.metrics import structural_similarity

    if data_range <= 0:
        return (float("nan"), None) if full else float("nan")
    a = orig.astype(np.float64)
    b = rec.astype(np.float64)
    if min(a.shape) < 3:
        return (float("nan"), None) if full else float("nan")
    res = structural_similarity(a, b, data_range=data_range, full=full, **_ssim_kwargs(a.shape))
    if full:
        return float(res[0]), res[1]
    return float(res)


def ssim_2d(orig, rec, data_range) -> float:
    if data_range <= 0:
        return float("nan")
    return float(np.mean([ssim(orig[z], rec[z], data_range) for z in range(orig.shape[0])]))


def lpips_slices(shape, slices_per_axis: int, seed: int) -> list[tuple[int, int]]:
    """The (axis, index) pairs LPIPS is computed on (see module docstring)."""
    rng = np.random.default_rng(seed)
    picks = []
    for axis in range(3):
        plane = [n for i, n in enumerate(shape) if i != axis]
        if min(plane) < LPIPS_MIN_SIDE:
            continue
        n = shape[axis]
        k = min(slices_per_axis, n)
        picks += [(axis, int(i)) for i in sorted(rng.choice(n, size=k, replace=False))]
    return picks


def lpips_score(orig, rec, vmin: float, data_range: float, slices_per_axis: int = 4, seed: int = 0) -> float:
    import torch

    from .lpips_weights import model

    if data_range <= 0:
        return float("nan")
    picks = lpips_slices(orig.shape, slices_per_axis, seed)
    if not picks:
        return float("nan")
    m = model()
    vals = []
    with torch.no_grad():
        for axis, i in picks:
            a = np.take(orig, i, axis=axis).astype(np.float32)
            b = np.take(rec, i, axis=axis).astype(np.float32)
            ta = torch.from_numpy((a - vmin) / data_range * 2 - 1)[None, None].repeat(1, 3, 1, 1)
            tb = torch.from_numpy(np.clip((b - vmin) / data_range * 2 - 1, -1, 1))[None, None].repeat(1, 3, 1, 1)
            vals.append(float(m(ta, tb).item()))
    return float(np.mean(vals))


def compute(orig: np.ndarray, rec: np.ndarray, *, foreground_threshold: float = 0.01,
            lpips: bool = True, lpips_slices_per_axis: int = 4, lpips_seed: int = 0) -> dict[str, Any]:
    if orig.shape != rec.shape:
        raise ValueError(f"shape mismatch: original {orig.shape}, reconstruction {rec.shape}")
    vmin, vmax = float(orig.min()), float(orig.max())
    R = vmax - vmin
    out: dict[str, Any] = {"data_range": R}
    exact = bool(np.array_equal(orig, rec))
    out["exact"] = exact
    if R <= 0:
        out["note"] = "constant original: data range 0, PSNR and SSIM undefined"
    out["mse"] = _mse(orig, rec)
    out["psnr_3d"] = _psnr(out["mse"], R)
    out["psnr_2d"] = psnr_2d(orig, rec, R)
    out["ssim_2d"] = ssim_2d(orig, rec, R)
    s3, smap = ssim(orig, rec, R, full=True)
    out["ssim_3d"] = s3
    mask = orig > (vmin + foreground_threshold * R) if R > 0 else np.zeros(orig.shape, bool)
    out["foreground_fraction"] = float(mask.mean())
    if mask.any():
        out["psnr_fg"] = _psnr(_mse(orig, rec, mask), R)
        out["ssim_fg"] = float(smap[mask].mean()) if smap is not None else float("nan")
    else:
        out["psnr_fg"] = out["ssim_fg"] = float("nan")
    out["lpips"] = (lpips_score(orig, rec, vmin, R, lpips_slices_per_axis, lpips_seed) if lpips else float("nan"))
    return out
