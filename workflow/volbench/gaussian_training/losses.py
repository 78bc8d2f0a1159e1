"""Losses: VolMicro's edge-aware weighted MSE and regularisers (seed 001 eqs. 10-16), and
GaussianPile's L1 + lambda D-SSIM on slices (seed 000 eq. 11)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def edge_weights(volume01: np.ndarray, w_base: float = 1.0, w_edge: float = 2.0) -> np.ndarray:
    """omega(x) = w_base + w_edge |grad V| / max |grad V|, central differences with a step of one
    voxel (one-sided at the borders), seed 001 eqs. 10-11."""
    v = np.asarray(volume01, dtype=np.float32)
    grads = [np.gradient(v, axis=a) if v.shape[a] > 1 else np.zeros_like(v) for a in range(3)]
    mag = np.sqrt(sum(g * g for g in grads))
    peak = float(mag.max()) if mag.size else 0.0
    if peak <= 0:
        return np.full(v.shape, w_base, dtype=np.float32)
    return (w_base + w_edge * mag / peak).astype(np.float32)


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (weight * (pred - target) ** 2).mean()


def sparsity(intensity: torch.Tensor) -> torch.Tensor:
    """L_sparse = mean_i w_i (eq. 13)."""
    return intensity.mean() if intensity.numel() else intensity.sum()


def scale_bounds(scales: torch.Tensor, s_min: float, s_max: float) -> torch.Tensor:
    """L_scale = mean_i max(0, |s_i| - s_max)^2 + max(0, s_min - min_j s_ij)^2 (eq. 15)."""
    if scales.numel() == 0:
        return scales.sum()
    big = F.relu(scales.norm(dim=-1) - s_max) ** 2
    small = F.relu(s_min - scales.min(dim=-1).values) ** 2
    return (big + small).mean()


def _gauss_1d(size: int = 11, sigma: float = 1.5, device=None, dtype=torch.float32) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def ssim2d(img: torch.Tensor, ref: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Mean SSIM of (B,H,W) images on the [0, 1] scale, 11x11 Gaussian window (sigma 1.5), zero
    padding, as 3DGS's loss_utils.ssim. The window is the outer product of two normalised 1D
    Gaussians, so it is applied as two 1D convolutions (rows, then columns), the five local
    moments in one grouped call: the same function as the 2D convolution, several times cheaper
    on a CPU."""
    g = _gauss_1d(window, 1.5, img.device, img.dtype)
    pad = window // 2
    x = img[:, None]
    y = ref[:, None]
    stack = torch.cat([x, y, x * x, y * y, x * y], 1)  # (B,5,H,W)
    wr = g.reshape(1, 1, 1, window).expand(5, 1, 1, window)
    wc = g.reshape(1, 1, window, 1).expand(5, 1, window, 1)
    m = F.conv2d(F.conv2d(stack, wr, padding=(0, pad), groups=5), wc, padding=(pad, 0), groups=5)
    mu_x, mu_y, exx, eyy, exy = m.unbind(1)
    sxx = exx - mu_x ** 2
    syy = eyy - mu_y ** 2
    sxy = exy - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2)
    return (num / den).mean()


def l1_dssim(img: torch.Tensor, ref: torch.Tensor, lam: float) -> torch.Tensor:
    """L = L1 + lam * (1 - SSIM) (seed 000 eq. 11; D-SSIM = 1 - SSIM as in 3DGS)."""
    loss = (img - ref).abs().mean()
    if lam:
        loss = loss + lam * (1.0 - ssim2d(img, ref))
    return loss
