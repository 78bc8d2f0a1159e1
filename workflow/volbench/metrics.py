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
* Seed 001's protocol (protocol_001, the columns psnr_001 / ssim_001 / lpips_vgg_001 of the
  VolMicro tables): 10 slices drawn by a seeded generator, 5 axial, 3 coronal, 2 sagittal (seed
  001 sec. 4.1); 2D PSNR and SSIM (same R and window rules) and LPIPS with the VGG16 backbone
  (v0.1) on each, averaged over the 10.
* Large volumes: compute_chunked() gives compute()'s values from memory-mapped volumes
  (open_volume) block by block, within VOLBENCH_METRICS_MEMORY_MB (default 1024 MB) of working
  arrays; the score jobs use it (see the section at the end of this module).
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterator

import numpy as np

PSNR_CAP = 100.0
LPIPS_MIN_SIDE = 32
#: VGG16's smallest input side for LPIPS (four 2x poolings before its last layer; AlexNet's
#: strided first layer and three poolings need LPIPS_MIN_SIDE)
VGG_MIN_SIDE = 16
#: memory (MB) that compute_chunked's working arrays may use; the environment variable
#: VOLBENCH_METRICS_MEMORY_MB sets it for the score jobs
DEFAULT_MEMORY_MB = 1024
#: bytes per voxel of one SSIM block: the two float64 inputs, skimage's five filtered maps,
#: three products and the SSIM terms (about 16 float64 arrays, rounded up)
SSIM_BYTES_PER_VOXEL = 160


def psnr_from_mse(mse: float, data_range: float | None = None) -> float:
    """PSNR (dB) of a mean squared error: 10 log10(R^2 / mse) for the data range R, or
    -10 log10(mse) for an MSE already on the [0, 1] scale (data_range None, peak 1); inf when
    mse <= 0 (exact), NaN when R <= 0 (undefined)."""
    if data_range is not None and data_range <= 0:
        return float("nan")
    if mse <= 0:
        return float("inf")
    if data_range is None:
        return -10.0 * math.log10(mse)
    return 10.0 * math.log10(data_range * data_range / mse)


def psnr_3d(orig: np.ndarray, rec: np.ndarray, data_range: float) -> float:
    return psnr_from_mse(_mse(orig, rec), data_range)


def _mse(orig, rec, mask=None) -> float:
    total, count = 0.0, 0
    for z in range(orig.shape[0]):  # slice-wise: no full float copy of the volume
        d = orig[z].astype(np.float64) - rec[z].astype(np.float64)
        if mask is not None:
            d = d[mask[z]]
        total += float(np.dot(d.ravel(), d.ravel()))
        count += d.size
    return total / count if count else float("nan")


def mean_slice_psnr(vals) -> float:
    """The 2D PSNR of per-slice PSNRs: inf when every slice is exact, else their mean with each
    exact slice counted as PSNR_CAP."""
    if all(math.isinf(v) for v in vals):
        return float("inf")
    return float(np.mean([min(v, PSNR_CAP) for v in vals]))


def psnr_2d(orig: np.ndarray, rec: np.ndarray, data_range: float) -> float:
    if data_range <= 0:
        return float("nan")
    vals = []
    for z in range(orig.shape[0]):
        d = orig[z].astype(np.float64) - rec[z].astype(np.float64)
        vals.append(psnr_from_mse(float(np.mean(d * d)), data_range))
    return mean_slice_psnr(vals)


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
    """Mean LPIPS over the picked slices. Where every picked slice of `rec` equals the original's
    bit for bit, the value is 0 without loading the network (LPIPS of identical images is exactly 0:
    both go through the same deterministic forward pass; a lossless cell then skips importing
    torch/torchvision/lpips, ~3.5 s of its score job)."""
    if data_range <= 0:
        return float("nan")
    picks = lpips_slices(orig.shape, slices_per_axis, seed)
    if not picks:
        return float("nan")
    if all(np.array_equal(np.take(orig, i, axis=axis), np.take(rec, i, axis=axis)) for axis, i in picks):
        return 0.0
    import torch

    from .lpips_weights import model

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


#: seed 001's slice sample: slices per axis (axial Z, coronal Y, sagittal X)
PROTOCOL_001_SLICES = (5, 3, 2)
PROTOCOL_001_COLUMNS = ("psnr_001", "ssim_001", "lpips_vgg_001")


def protocol_001_slices(shape, seed: int = 0, per_axis=PROTOCOL_001_SLICES) -> list[tuple[int, int]]:
    """Seed 001's 10 evaluation slices: (axis, index) pairs, per_axis[a] distinct indices drawn
    along axis a (all of them when the axis is shorter), by a generator seeded with `seed`."""
    rng = np.random.default_rng(seed)
    picks = []
    for axis, k in enumerate(per_axis):
        n = int(shape[axis])
        picks += [(axis, int(i)) for i in sorted(rng.choice(n, size=min(int(k), n), replace=False))]
    return picks


def protocol_001(orig, rec, seed: int = 0, lpips: bool = True, range_=None) -> dict[str, float]:
    """psnr_001, ssim_001, lpips_vgg_001: seed 001's metrics on its 10-slice sample (module
    docstring), with the original's data range; LPIPS with the VGG16 backbone (NaN when
    lpips=False or a slice is smaller than VGG_MIN_SIDE on a side). range_: the original's
    (min, max - min) when already known (compute_chunked's data_min, data_range), else one pass."""
    if tuple(orig.shape) != tuple(rec.shape):
        raise ValueError(f"shape mismatch: original {orig.shape}, reconstruction {rec.shape}")
    if range_ is None:
        vmin, vmax = math.inf, -math.inf
        for z0, z1 in _z_chunks(tuple(orig.shape), memory_budget_mb()):
            a = np.asarray(orig[z0:z1])
            vmin, vmax = min(vmin, float(a.min())), max(vmax, float(a.max()))
        range_ = (vmin, vmax - vmin)
    vmin, R = (float(v) for v in range_)
    nan = float("nan")
    if R <= 0:
        return {"psnr_001": nan, "ssim_001": nan, "lpips_vgg_001": nan}
    picks = protocol_001_slices(orig.shape, seed)
    pairs = [(np.take(orig, i, axis=ax).astype(np.float64), np.take(rec, i, axis=ax).astype(np.float64))
             for ax, i in picks]
    psnrs = [psnr_from_mse(float(np.mean((a - b) ** 2)), R) for a, b in pairs]
    out = {"psnr_001": mean_slice_psnr(psnrs),
           "ssim_001": float(np.mean([ssim(a, b, R) for a, b in pairs])),
           "lpips_vgg_001": nan}
    if lpips and all(min(a.shape) >= VGG_MIN_SIDE for a, _ in pairs):
        import torch

        from .lpips_weights import model

        m = model("vgg")
        vals = []
        with torch.no_grad():
            for a, b in pairs:
                ta = torch.from_numpy(((a - vmin) / R * 2 - 1).astype(np.float32))[None, None].repeat(1, 3, 1, 1)
                tb = torch.from_numpy(np.clip((b - vmin) / R * 2 - 1, -1, 1).astype(np.float32))[None, None]
                vals.append(float(m(ta, tb.repeat(1, 3, 1, 1)).item()))
        out["lpips_vgg_001"] = float(np.mean(vals))
    return out


def compute(orig: np.ndarray, rec: np.ndarray, *, foreground_threshold: float = 0.01,
            lpips: bool = True, lpips_slices_per_axis: int = 4, lpips_seed: int = 0) -> dict[str, Any]:
    if orig.shape != rec.shape:
        raise ValueError(f"shape mismatch: original {orig.shape}, reconstruction {rec.shape}")
    vmin, vmax = float(orig.min()), float(orig.max())
    R = vmax - vmin
    out: dict[str, Any] = {"data_range": R, "data_min": vmin}
    exact = bool(np.array_equal(orig, rec))
    out["exact"] = exact
    if R <= 0:
        out["note"] = "constant original: data range 0, PSNR and SSIM undefined"
    out["mse"] = _mse(orig, rec)
    out["psnr_3d"] = psnr_from_mse(out["mse"], R)
    out["psnr_2d"] = psnr_2d(orig, rec, R)
    out["ssim_2d"] = ssim_2d(orig, rec, R)
    s3, smap = ssim(orig, rec, R, full=True)
    out["ssim_3d"] = s3
    mask = orig > (vmin + foreground_threshold * R) if R > 0 else np.zeros(orig.shape, bool)
    out["foreground_fraction"] = float(mask.mean())
    if mask.any():
        out["psnr_fg"] = psnr_from_mse(_mse(orig, rec, mask), R)
        out["ssim_fg"] = float(smap[mask].mean()) if smap is not None else float("nan")
    else:
        out["psnr_fg"] = out["ssim_fg"] = float("nan")
    out["lpips"] = (lpips_score(orig, rec, vmin, R, lpips_slices_per_axis, lpips_seed) if lpips else float("nan"))
    return out


# -- large volumes: the same metrics, computed block by block -------------------------------
#
# compute_chunked() gives the numbers of compute() while holding only blocks of the volumes in
# memory: the inputs may be numpy memmaps (open_volume), and no full-size float copy is made.
# Min/max, MSE, 2D PSNR/SSIM and the foreground PSNR are slice-wise sums (the same operations
# in the same order as compute(), so the same values). The 3D SSIM map is computed on blocks
# of Z x Y (all of X) extended by a halo of the filter radius on each side, clipped at the
# volume's faces, and only the block's own voxels are kept: the Gaussian filter (radius 5)
# reaches no further than the halo, and at a face the block sees the same reflection as the
# whole volume, so every kept value equals the whole-volume map's. The means over the map are
# accumulated over blocks (float64 sums in another order: equal to ~1e-12).


def memory_budget_mb() -> int:
    try:
        return max(16, int(os.environ.get("VOLBENCH_METRICS_MEMORY_MB", DEFAULT_MEMORY_MB)))
    except ValueError:
        return DEFAULT_MEMORY_MB


def open_volume(path):
    """The canonical volume (an uncompressed TIFF) as a read-only memmap, without reading it.

    Falls back to reading it into memory when the file cannot be mapped (a compressed TIFF).
    """
    import tifffile

    try:
        vol = tifffile.memmap(str(path), mode="r")
    except (ValueError, OSError, IndexError):
        from . import io

        return io.read_volume(path)
    if vol.ndim == 2:
        vol = vol[None]
    return vol


def _ssim_window(shape) -> tuple[dict[str, Any], int]:
    """The SSIM keyword arguments for a volume of `shape`, the window size, the filter radius."""
    kw = _ssim_kwargs(shape)
    win = kw.get("win_size", 11)  # the Gaussian window: 2 * int(3.5 * 1.5 + 0.5) + 1
    return kw, win


def _ranges(n: int, size: int) -> list[tuple[int, int]]:
    size = max(1, int(size))
    return [(a, min(n, a + size)) for a in range(0, n, size)]


def plan_blocks(shape, memory_mb: float, halo: int, win: int) -> tuple[int, int]:
    """Block size (Z, Y) whose haloed SSIM block fits in memory_mb (X is never split)."""
    Z, Y, X = (int(s) for s in shape)
    vox = max(1, int(memory_mb * 2**20 // SSIM_BYTES_PER_VOXEL))
    least = max(win, 2 * halo + 1, 4)
    bz = vox // (Y * X) - 2 * halo
    if bz >= min(Z, least):
        return min(Z, bz), Y
    bz = min(Z, least)
    by = vox // (min(Z, bz + 2 * halo) * X) - 2 * halo
    return bz, min(Y, max(by, least))  # the least a block can be: may exceed memory_mb


def _slab(a: int, b: int, n: int, halo: int, win: int) -> tuple[int, int]:
    lo, hi = max(0, a - halo), min(n, b + halo)
    if hi - lo < win:  # skimage needs every side >= the window; more halo changes nothing
        lo = max(0, hi - win)
        hi = min(n, lo + win)
    return lo, hi


def ssim_map_blocks(orig, rec, data_range: float, block=None,
                    memory_mb: float | None = None) -> Iterator[tuple[slice, slice, np.ndarray]]:
    """Yield (z slice, y slice, SSIM map of that block) covering the volume; each block's values
    are those of ``ssim(orig, rec, data_range, full=True)[1]`` at the same voxels."""
    from skimage.metrics import structural_similarity

    kw, win = _ssim_window(orig.shape)
    halo = (win - 1) // 2
    Z, Y, _ = orig.shape
    bz, by = block if block is not None else plan_blocks(orig.shape, memory_mb or memory_budget_mb(), halo, win)
    for z0, z1 in _ranges(Z, bz):
        sz0, sz1 = _slab(z0, z1, Z, halo, win)
        for y0, y1 in _ranges(Y, by):
            sy0, sy1 = _slab(y0, y1, Y, halo, win)
            a = np.asarray(orig[sz0:sz1, sy0:sy1], dtype=np.float64)
            b = np.asarray(rec[sz0:sz1, sy0:sy1], dtype=np.float64)
            _, smap = structural_similarity(a, b, data_range=data_range, full=True, **kw)
            del a, b
            yield slice(z0, z1), slice(y0, y1), smap[z0 - sz0:z1 - sz0, y0 - sy0:y1 - sy0]


def slice_metrics_2d(orig, slices, data_range: float, memory_mb: float | None = None) -> dict[str, float]:
    """psnr_2d and ssim_2d (as compute_chunked: mean over axial slices, PSNR capped per slice,
    inf when every slice is exact) of ``slices`` (D,H,W, e.g. a codec's rendered slices)
    against the original, with the original's data range."""
    if tuple(orig.shape) != tuple(slices.shape):
        raise ValueError(f"shape mismatch: original {orig.shape}, slices {slices.shape}")
    R = float(data_range)
    if R <= 0:
        return {"psnr_2d": float("nan"), "ssim_2d": float("nan")}
    psnrs, ssims = [], []
    for z0, z1 in _z_chunks(tuple(orig.shape), memory_mb or memory_budget_mb()):
        a, b = np.asarray(orig[z0:z1]), np.asarray(slices[z0:z1])
        for k in range(z1 - z0):
            d = a[k].astype(np.float64) - b[k].astype(np.float64)
            psnrs.append(psnr_from_mse(float(np.mean(d * d)), R))
            ssims.append(ssim(a[k], b[k], R))
    return {"psnr_2d": mean_slice_psnr(psnrs), "ssim_2d": float(np.mean(ssims))}


def _z_chunks(shape, memory_mb: float) -> list[tuple[int, int]]:
    """Ranges of whole Z slices for the slice-wise passes (a few float64 copies per slice)."""
    Z, Y, X = shape
    per_slice = Y * X * 8 * 4
    return _ranges(Z, max(1, int(memory_mb * 2**20 // max(per_slice, 1))))


def compute_chunked(orig, rec, *, foreground_threshold: float = 0.01, lpips: bool = True,
                    lpips_slices_per_axis: int = 4, lpips_seed: int = 0, memory_mb: float | None = None,
                    block=None) -> dict[str, Any]:
    """compute() for volumes that need not fit in memory (memmaps): same keys, same values.

    memory_mb bounds the working arrays (default: memory_budget_mb()); `block` = (bz, by) forces
    the 3D SSIM block size (tests).
    """
    if tuple(orig.shape) != tuple(rec.shape):
        raise ValueError(f"shape mismatch: original {orig.shape}, reconstruction {rec.shape}")
    memory_mb = memory_mb or memory_budget_mb()
    shape = tuple(int(s) for s in orig.shape)
    Z = shape[0]
    zr = _z_chunks(shape, memory_mb)
    vmin, vmax, exact = math.inf, -math.inf, True
    for z0, z1 in zr:  # pass 1: range and exactness
        a, b = np.asarray(orig[z0:z1]), np.asarray(rec[z0:z1])
        vmin, vmax = min(vmin, float(a.min())), max(vmax, float(a.max()))
        exact = exact and bool(np.array_equal(a, b))
    R = vmax - vmin
    out: dict[str, Any] = {"data_range": R, "data_min": vmin, "exact": exact}
    if R <= 0:
        out["note"] = "constant original: data range 0, PSNR and SSIM undefined"
    # pass 2: slice-wise MSE, 2D PSNR and SSIM, foreground, in compute()'s order
    total = fg_total = 0.0
    count = fg_count = 0
    psnrs, ssims = [], []
    thr = vmin + foreground_threshold * R
    for z0, z1 in zr:
        a, b = np.asarray(orig[z0:z1]), np.asarray(rec[z0:z1])
        for k in range(z1 - z0):
            d = a[k].astype(np.float64) - b[k].astype(np.float64)
            total += float(np.dot(d.ravel(), d.ravel()))
            count += d.size
            if R > 0:
                psnrs.append(psnr_from_mse(float(np.mean(d * d)), R))
                ssims.append(ssim(a[k], b[k], R))
                m = a[k] > thr
                dm = d[m]
                fg_total += float(np.dot(dm.ravel(), dm.ravel()))
                fg_count += dm.size
    out["mse"] = total / count if count else float("nan")
    out["psnr_3d"] = psnr_from_mse(out["mse"], R)
    if R <= 0:
        out["psnr_2d"] = out["ssim_2d"] = float("nan")
    else:
        out["psnr_2d"] = mean_slice_psnr(psnrs)
        out["ssim_2d"] = float(np.mean(ssims))
    # pass 3: the 3D SSIM map, block by block
    s_sum = s_fg = 0.0
    n_crop = 0
    have_map = R > 0 and min(shape) >= 3
    if have_map:
        _, win = _ssim_window(shape)
        pad = (win - 1) // 2
        for zs, ys, smap in ssim_map_blocks(orig, rec, R, block=block, memory_mb=memory_mb):
            # the cropped mean of skimage: voxels at least `pad` from every face
            cz = slice(max(zs.start, pad) - zs.start, max(min(zs.stop, Z - pad) - zs.start, 0))
            cy = slice(max(ys.start, pad) - ys.start, max(min(ys.stop, shape[1] - pad) - ys.start, 0))
            inner = smap[cz, cy, pad:shape[2] - pad]
            s_sum += float(inner.sum(dtype=np.float64))
            n_crop += inner.size
            m = np.asarray(orig[zs, ys]) > thr
            s_fg += float(smap[m].sum(dtype=np.float64))
    out["ssim_3d"] = s_sum / n_crop if have_map and n_crop else float("nan")
    out["foreground_fraction"] = fg_count / (Z * shape[1] * shape[2]) if R > 0 else 0.0
    if fg_count:
        out["psnr_fg"] = psnr_from_mse(fg_total / fg_count, R)
        out["ssim_fg"] = s_fg / fg_count if have_map else float("nan")
    else:
        out["psnr_fg"] = out["ssim_fg"] = float("nan")
    out["lpips"] = (lpips_score(orig, rec, vmin, R, lpips_slices_per_axis, lpips_seed) if lpips else float("nan"))
    return out
