"""Metrics on the held-out slices, as seed 004 Table 1 reports them: mean and std over the test
slices of PSNR, SSIM and LPIPS, one value per held-out axial slice.

The rules are volbench's (volbench.metrics, config/README.md "metrics"), applied slice by slice:
data range R = the original volume's max - min (the whole volume's, the same for every method
and fraction); PSNR = 10 log10(R^2 / MSE) of the slice, capped at metrics.PSNR_CAP (100 dB) for an
exact slice; SSIM = metrics.ssim (Gaussian window 11, sigma 1.5) of the 2D slice; LPIPS =
metrics.lpips_score on that one slice (AlexNet, scaled to [-1, 1] by the original's min and R,
the prediction clipped), NaN where a side is under 32 pixels or LPIPS is disabled in the config.
std is the population standard deviation (ddof 0) over the test slices: 0 for one test slice.

The score job is the only one that reads the volume; it runs after every method of the split.

Seed 004 Tables 2-3 and semantics, for the methods that render any axis (``renders.npz``, the
compositing Gaussians of volbench.sparse.composite_fit): per axis (axial: the held-out slices;
coronal, sagittal: every slice of the volume normal to that axis, with the same range R) PSNR and
SSIM as above, and the *semantic loss* of a slice, the mean over its pixels and the K classes of
(S_k - [label = k])^2 (S the rendered class map, eq. 2, against the one-hot labels of the
dataset's label volume). Dice per class on the held-out axial slices, pooled over them:
2 |P_k & L_k| / (|P_k| + |L_k|) with P = argmax_k S_k (NaN for a class absent from both).
A reference needing no model is scored beside them: the label of the nearest training slice
(``dice_nearest_labels``), the label counterpart of the nearest-slice baseline.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .. import io, metrics
from ..errors import VolbenchError
from . import run, split

METRICS = ("ssim", "psnr", "lpips")


def slice_metrics(orig: np.ndarray, pred: np.ndarray, vmin: float, data_range: float, lpips: bool = True,
                  lpips_seed: int = 0) -> dict[str, float]:
    """PSNR, SSIM, LPIPS of one predicted axial slice against the original slice."""
    d = orig.astype(np.float64) - pred.astype(np.float64)
    psnr = min(metrics.psnr_from_mse(float(np.mean(d * d)), data_range), metrics.PSNR_CAP)
    ssim = metrics.ssim(orig, pred, data_range)
    lp = float("nan")
    if lpips and min(orig.shape) >= metrics.LPIPS_MIN_SIDE and data_range > 0:
        lp = metrics.lpips_score(orig[None], pred[None], vmin, data_range, slices_per_axis=1, seed=lpips_seed)
    return {"psnr": float(psnr), "ssim": float(ssim), "lpips": float(lp)}


def summarise(values) -> tuple[float, float]:
    """(mean, population std) of the finite values; NaN when there are none."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std())


AXIS_SLICE = {"axial": lambda v, k: v[k], "coronal": lambda v, k: v[:, k, :], "sagittal": lambda v, k: v[:, :, k]}


def dice_per_class(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> list[float]:
    """2 |P_k & L_k| / (|P_k| + |L_k|) per class k, pooled over all voxels given; NaN where the class
    is in neither."""
    out = []
    for k in range(n_classes):
        p, t = pred == k, truth == k
        den = int(p.sum()) + int(t.sum())
        out.append(float(2 * int((p & t).sum()) / den) if den else float("nan"))
    return out


def semantic_loss(sem: np.ndarray, labels: np.ndarray) -> float:
    """Mean over pixels and classes of (S_k - onehot_k)^2 for one slice: sem (K,h,w), labels (h,w)."""
    K = sem.shape[0]
    onehot = (labels[None] == np.arange(K)[:, None, None]).astype(np.float64)
    return float(np.mean((sem.astype(np.float64) - onehot) ** 2))


def nearest_labels(labels: np.ndarray, train_z, test_z) -> np.ndarray:
    """The label slice of the nearest training slice (ties: the lower z) for every test z, the
    nearest-slice baseline's rule (interp.nearest_index)."""
    from .interp import nearest_index

    return labels[np.asarray(train_z)[nearest_index(train_z, test_z)]]


def score_axes(vol, labels, renders: dict, vmin: float, R: float, test_z, n_classes: int) -> dict:
    """Per-axis PSNR / SSIM / semantic loss of one method's renderings, Dice on the held-out axial slices."""
    out = {}
    for axis in ("axial", "coronal", "sagittal"):
        r = renders.get(axis)
        if r is None:
            continue
        if axis == "axial" and list(r["index"]) != list(test_z):
            raise ValueError("axial renderings are not the held-out slices")
        per = {"psnr": [], "ssim": [], "semantic_loss": []}
        for i, k in enumerate(r["index"]):
            m = slice_metrics(np.asarray(AXIS_SLICE[axis](vol, int(k))), r["image"][i], vmin, R, lpips=False)
            per["psnr"].append(m["psnr"])
            per["ssim"].append(m["ssim"])
            if r["semantics"] is not None and labels is not None:
                per["semantic_loss"].append(semantic_loss(r["semantics"][i], AXIS_SLICE[axis](labels, int(k))))
        row = {"n_slices": len(r["index"])}
        for m, vals in per.items():
            if vals:
                row[f"{m}_mean"], row[f"{m}_std"] = summarise(vals)
        out[axis] = row
    ax = renders.get("axial")
    if ax is not None and ax["semantics"] is not None and labels is not None:
        pred = np.argmax(ax["semantics"], axis=1)
        out["dice"] = dice_per_class(pred, labels[np.asarray(test_z)], n_classes)
    return out


def score_split(volume_path, train_dir, method_dirs: dict[str, str | Path], *, lpips_cfg: dict | None = None,
                labels_path=None) -> dict:
    """Score every method of one split; a failed or missing method keeps its record and reason."""
    lpips_cfg = lpips_cfg or {}
    use_lpips = bool(lpips_cfg.get("enabled", True))
    lpips_seed = int(lpips_cfg.get("seed", 0))
    vol = metrics.open_volume(volume_path)
    rec = io.read_json(Path(train_dir) / split.TRAIN_JSON)
    test_z = np.asarray(rec["test_z"], dtype=np.int64)
    vmin, vmax = float(np.min(vol)), float(np.max(vol))
    R = vmax - vmin
    out = {"dataset": rec["dataset"], "fraction": rec["fraction"], "seed": rec["seed"], "depth": rec["shape"][0],
           "n_train": rec["n_train"], "n_test": rec["n_test"], "train_z": rec["train_z"], "test_z": rec["test_z"],
           "data_range": R, "lpips": use_lpips, "method_order": list(method_dirs), "methods": {}}
    labels = None
    linfo = rec.get("labels")
    if labels_path is not None and linfo:
        labels = io.read_volume(labels_path)
        if labels.shape != vol.shape:
            raise VolbenchError(f"{labels_path}: shape {labels.shape}, the volume {vol.shape}; re-run its data preparation")
        out["classes"] = linfo["classes"]
        out["dice_nearest_labels"] = dice_per_class(nearest_labels(labels, rec["train_z"], test_z),
                                                    labels[test_z], int(linfo["n_classes"]))
    for name, mdir in method_dirs.items():
        fit = run.read_fit(mdir)
        row = {k: fit.get(k) for k in ("status", "error", "method_type", "display_name", "family", "table_order",
                                       "trains", "params", "versions", "fit_seconds", "fit_cpu_seconds", "fit_psnr",
                                       "device", "stats") if k in fit}
        row["method"] = name
        if fit.get("status") == "ok":
            if (fit.get("split") or {}).get("train_sha256") != rec["train_sha256"]:
                row.update(status="failed", error="the prediction was made on another split; re-run its sparse_fit job")
            else:
                pred = run.read_prediction(mdir)
                if pred.shape != (len(test_z), *vol.shape[1:]):
                    row.update(status="failed", error=f"prediction has shape {pred.shape}, expected "
                                                      f"{(len(test_z), *vol.shape[1:])}")
                else:
                    per = [slice_metrics(np.asarray(vol[z]), pred[i], vmin, R, use_lpips, lpips_seed)
                           for i, z in enumerate(test_z)]
                    for m in METRICS:
                        row[m] = [p[m] for p in per]
                        row[f"{m}_mean"], row[f"{m}_std"] = summarise(row[m])
                    renders = run.read_renders(mdir)
                    if renders:
                        axes = score_axes(vol, labels, renders, vmin, R, test_z, int((linfo or {}).get("n_classes") or 0))
                        row["dice"] = axes.pop("dice", None)
                        row["axes"] = axes
        out["methods"][name] = row
    return out
