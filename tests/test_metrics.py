"""Metrics against values computed by hand from their definitions (config/README.md, metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from volbench import metrics


def _vol():
    v = np.zeros((4, 12, 12), np.uint16)
    v[:, 3:9, 3:9] = 1000
    v[0, 0, 0] = 200  # range: 0 .. 1000
    return v + 50


def test_psnr_uses_original_range_not_dtype():
    o = _vol()
    r = o.copy()
    r[1, 5, 5] += 10
    r[2, 6, 6] -= 20
    R = 1000.0
    mse = (10**2 + 20**2) / o.size
    assert metrics.psnr_3d(o, r, R) == pytest.approx(10 * math.log10(R * R / mse))
    out = metrics.compute(o, r, lpips=False)
    assert out["data_range"] == R
    assert out["psnr_3d"] == pytest.approx(10 * math.log10(R * R / mse))
    # 2D: per slice along Z; slices 0 and 3 are exact and count as the 100 dB cap
    per = [100.0, 10 * math.log10(R * R / (100 / 144)), 10 * math.log10(R * R / (400 / 144)), 100.0]
    assert out["psnr_2d"] == pytest.approx(np.mean(per))


def test_exact_is_inf_and_constant_is_nan():
    o = _vol()
    out = metrics.compute(o, o.copy(), lpips=False)
    assert out["psnr_3d"] == math.inf and out["psnr_2d"] == math.inf
    assert out["ssim_3d"] == pytest.approx(1.0) and out["ssim_2d"] == pytest.approx(1.0)
    c = np.full((4, 12, 12), 7, np.uint16)
    out = metrics.compute(c, c + 1, lpips=False)
    assert math.isnan(out["psnr_3d"]) and math.isnan(out["psnr_2d"]) and math.isnan(out["ssim_3d"])
    assert "undefined" in out["note"]



def test_psnr_from_mse():
    assert metrics.psnr_from_mse(0.01, 10.0) == pytest.approx(40.0)
    assert metrics.psnr_from_mse(1e-3) == pytest.approx(30.0)  # [0, 1] scale, peak 1
    assert metrics.psnr_from_mse(0.0) == math.inf and metrics.psnr_from_mse(0.0, 5.0) == math.inf
    assert math.isnan(metrics.psnr_from_mse(0.1, 0.0))
    # the normalised form is -10 log10(mse) exactly (no rounding of 1 / mse)
    assert metrics.psnr_from_mse(0.3) == -10.0 * math.log10(0.3)

def _ssim_one_window(x, y, R):
    x = x.astype(float).ravel()
    y = y.astype(float).ravel()
    c1, c2 = (0.01 * R) ** 2, (0.03 * R) ** 2
    mx, my = x.mean(), y.mean()
    vx, vy = ((x - mx) ** 2).mean(), ((y - my) ** 2).mean()
    cxy = ((x - mx) * (y - my)).mean()
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def test_ssim_2d_by_hand():
    # 3x3 slices: a 3-tap uniform window has exactly one valid position, the whole slice
    rng = np.random.default_rng(0)
    o = rng.integers(0, 200, (2, 3, 3)).astype(np.uint8)
    r = np.clip(o.astype(int) + rng.integers(-20, 20, o.shape), 0, 255).astype(np.uint8)
    R = float(o.max() - o.min())
    want = np.mean([_ssim_one_window(o[z], r[z], R) for z in range(2)])
    assert metrics.ssim_2d(o, r, R) == pytest.approx(want, rel=1e-9)


def test_ssim_3d_by_hand():
    rng = np.random.default_rng(1)
    o = rng.normal(100, 20, (3, 3, 3))
    r = o + rng.normal(0, 5, o.shape)
    R = float(o.max() - o.min())
    assert metrics.ssim(o, r, R) == pytest.approx(_ssim_one_window(o, r, R), rel=1e-9)


def test_ssim_gaussian_window_for_large_volumes():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(2)
    o = rng.normal(0, 1, (12, 16, 16))
    r = o + rng.normal(0, 0.3, o.shape)
    R = float(o.max() - o.min())
    ref = structural_similarity(o, r, data_range=R, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert metrics.ssim(o, r, R) == pytest.approx(ref)
    assert 0.3 < ref < 0.99


def test_foreground_rule():
    o = _vol()
    r = o.copy()
    r[0, 0, 1] += 40  # a background voxel: only the whole-volume PSNR sees it
    r[1, 4, 4] += 30  # a foreground voxel
    out = metrics.compute(o, r, foreground_threshold=0.01, lpips=False)
    fg = o > (o.min() + 0.01 * 1000)
    assert out["foreground_fraction"] == pytest.approx(fg.mean())
    mse_fg = 30**2 / fg.sum()
    assert out["psnr_fg"] == pytest.approx(10 * math.log10(1000**2 / mse_fg))


def test_shape_mismatch():
    with pytest.raises(ValueError, match="shape mismatch"):
        metrics.compute(np.zeros((2, 3, 4)), np.zeros((2, 4, 3)), lpips=False)


def test_lpips_slice_rule():
    picks = metrics.lpips_slices((10, 40, 36), 3, seed=0)
    axes = sorted({a for a, _ in picks})
    # axis 0 planes are 40x36 (allowed); axis 1 planes 10x36 and axis 2 planes 10x40 are too small
    assert axes == [0] and len(picks) == 3
    assert picks == metrics.lpips_slices((10, 40, 36), 3, seed=0)
    assert picks != metrics.lpips_slices((10, 40, 36), 3, seed=1)
    picks = metrics.lpips_slices((40, 40, 40), 2, seed=0)
    assert sorted({a for a, _ in picks}) == [0, 1, 2] and len(picks) == 6


def test_lpips_identical_is_zero_and_grows_with_noise():
    from volbench.datasets.synthetic import cells

    rng = np.random.default_rng(3)
    o = cells(shape=(34, 40, 40), seed=1)
    R = float(o.max() - o.min())
    lo = float(o.min())
    assert metrics.lpips_score(o, o, lo, R, 1, 0) == pytest.approx(0.0, abs=1e-6)
    scores = [metrics.lpips_score(o, np.clip(o + rng.normal(0, s * R, o.shape), 0, 65535).astype(np.uint16),
                                  lo, R, 1, 0) for s in (0.02, 0.2)]
    assert 0 < scores[0] < scores[1]
