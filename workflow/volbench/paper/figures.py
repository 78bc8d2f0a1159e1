"""The papers' figures, from the summary and the results tree (matplotlib, Agg, PNG + PDF).

* :func:`rd_curves`: rate-distortion, one figure per dataset and metric (psnr_2d, psnr_3d, ssim_3d,
  lpips against bits per voxel, log scale), a line per codec instance;
* :func:`bubble_chart`: the GaussianPile paper's Fig. 1a, PSNR against decode speed, circle area =
  training (encode) minutes, one circle per codec instance and rate point, averaged over datasets;
* :func:`training_dynamics`: the VolMicro results' Fig. 1, loss / PSNR / MSE / Gaussian count
  against iteration, from the history.csv files the training codecs write (volbench.history);
* :func:`qualitative`: the same slice for every codec at its rate point nearest a matched bpv,
  with the slice PSNR written on it, a maximum-intensity projection row, and the absolute-error
  maps of that slice on one colour scale.

Each codec instance has one look in every figure (volbench.paper.style: the hue from its codec's
family, marker and line style per instance). Every output is written atomically (a temporary file
renamed into place).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .. import history  # noqa: E402
from ..errors import VolbenchError  # noqa: E402
from ..io import atomic_write  # noqa: E402
from ..metrics import psnr_from_mse  # noqa: E402
from .formatting import fmt_duration  # noqa: E402
from .selection import Context, ablation_mask, ok_rows  # noqa: E402
from .style import SHADES, shade, styles  # noqa: E402

RD_METRICS = {"psnr_2d": "2D PSNR (dB)", "psnr_3d": "3D PSNR (dB)", "ssim_3d": "3D SSIM", "lpips": "LPIPS"}
#: further summary columns rd_curves can plot (config paper.rd_metrics)
METRIC_LABELS = {**RD_METRICS, "ssim_2d": "2D SSIM", "psnr_fg": "foreground PSNR (dB)", "ssim_fg": "foreground SSIM"}
#: figure fonts stay small and fixed so the outputs do not depend on the user's matplotlibrc
_RC = {"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7, "figure.dpi": 100,
       "savefig.dpi": 150, "pdf.fonttype": 42, "svg.hashsalt": "volbench"}


def save_figure(fig, base: str | os.PathLike, formats=("png", "pdf")) -> list[Path]:
    """Save fig as base.png and base.pdf (each atomically) and close it."""
    base = Path(base)
    out = []
    try:
        for fmt in formats:
            meta = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
            out.append(atomic_write(base.with_name(base.name + f".{fmt}"),
                                    lambda tmp, fmt=fmt, meta=meta: fig.savefig(tmp, format=fmt, bbox_inches="tight",
                                                                                metadata=meta)))
    finally:
        plt.close(fig)
    return out


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=8, color="0.4", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


# ----------------------------------------------------------------------------------------------
def rd_curves(df_all: pd.DataFrame, dataset: str, out_dir: str | os.PathLike, ctx: Context | None = None,
              metrics=tuple(RD_METRICS)) -> list[Path]:
    """One figure per metric: out_dir/rd_<metric>.png/.pdf."""
    ctx = ctx or Context()
    look = styles(df_all)
    df = ok_rows(df_all)
    df = df[(df["dataset"] == dataset) & ~ablation_mask(df)]
    paths = []
    for m in metrics:
        with plt.rc_context(_RC):
            fig, ax = plt.subplots(figsize=(4.2, 3.2))
            n = 0
            lossless = []
            for codec in ctx.codec_order(df):
                sub = df[df["codec"] == codec]
                pts = sub[["bpv", m]].astype(float)
                pts = pts[np.isfinite(pts["bpv"]) & (pts["bpv"] > 0)].sort_values("bpv")
                fin = pts[np.isfinite(pts[m])]
                if fin.empty:
                    if not pts.empty and np.isinf(pts[m]).any():
                        lossless.append((look[codec], float(pts["bpv"].min())))
                    continue
                ax.plot(fin["bpv"], fin[m], markersize=4, label=look[codec].label, **look[codec].line())
                n += 1
            for st, bpv in lossless:
                ax.axvline(bpv, linestyle=":", color=st.color,
                           label=st.label + ("" if "lossless" in st.label else " (lossless)"))
                n += 1
            for b in ctx.matched_bpp:
                ax.axvline(b, color="0.7", linewidth=0.6, linestyle="--")
            if n == 0:
                _no_data(ax, f"no finite {m} values for {dataset}\n(metric disabled or every cell failed)")
            else:
                ax.set_xscale("log")
                ax.set_xlabel("bits per voxel (bpv)")
                ax.set_ylabel(METRIC_LABELS.get(m, m))
                ax.grid(True, which="both", linewidth=0.3, alpha=0.5)
                ax.legend(loc="best", frameon=False)
            ax.set_title(f"{dataset}: {METRIC_LABELS.get(m, m)} vs rate")
            paths += save_figure(fig, Path(out_dir) / f"rd_{m}")
    return paths


# ----------------------------------------------------------------------------------------------
def bubble_chart(df_all: pd.DataFrame, out_base: str | os.PathLike, ctx: Context | None = None,
                 psnr: str = "psnr_2d") -> list[Path]:
    """The GaussianPile paper's Fig. 1a: mean PSNR against decode speed; circle area = mean training minutes."""
    ctx = ctx or Context()
    look = styles(df_all)
    df = ok_rows(df_all)
    df = df[~ablation_mask(df)]
    recs = []
    lossless: dict[str, None] = {}
    for codec in ctx.codec_order(df):
        sub = df[df["codec"] == codec]
        for point, g in sub.groupby("point", sort=False):
            q = g[psnr].astype(float)
            q = q[np.isfinite(q)]
            speed = g["decode_mvox_s"].astype(float)
            speed = speed[np.isfinite(speed) & (speed > 0)]
            if q.empty and np.isinf(g[psnr].astype(float)).any():
                lossless.setdefault(look[codec].label, None)
            if q.empty or speed.empty:
                continue
            recs.append({"codec": codec, "point": point, "psnr": q.mean(),
                         "speed": float(np.exp(np.log(speed).mean())),  # geometric mean across datasets
                         "minutes": float(np.nanmean(g["encode_seconds"].astype(float))) / 60.0,
                         "n": g["dataset"].nunique()})
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(5.0, 3.8))
        if not recs:
            _no_data(ax, "no cell with finite PSNR and decode speed")
        else:
            r = pd.DataFrame(recs)
            mins = r["minutes"].fillna(0).clip(lower=0)
            top = max(float(mins.max()), 1e-9)
            sizes = 30 + 1200 * (mins / top)  # area proportional to minutes (plus a visible floor)
            seen = set()
            for i, row in r.iterrows():
                st = look[row["codec"]]
                ax.scatter(row["speed"], row["psnr"], s=sizes[i], color=st.color, alpha=0.45, edgecolors="k",
                           linewidths=0.5, label=None if st.label in seen else st.label)
                seen.add(st.label)
                several = int((r["codec"] == row["codec"]).sum()) > 1
                text = (f"{row['point']}\n" if several else "") + fmt_duration(row["minutes"] * 60)
                ax.annotate(text, (row["speed"], row["psnr"]), fontsize=5.5, ha="center", va="center")
            ax.margins(0.18)
            ax.set_xscale("log")
            plain = matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{v:g}")
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
                lambda v, _pos: f"{v:g}" if f"{v:.1g}"[0] in "25" else ""))
            ax.set_xlabel("decode speed (MVox/s, geometric mean over datasets)")
            ax.set_ylabel(f"mean {RD_METRICS.get(psnr, psnr)}")
            ax.grid(True, which="both", linewidth=0.3, alpha=0.5)
            leg = ax.legend(loc="best", frameon=False, markerscale=0.4)
            for h in leg.legend_handles:
                h.set_sizes([30])
        if lossless:
            ax.text(0.01, 0.01, "not shown (lossless, PSNR = ∞): " + ", ".join(lossless), transform=ax.transAxes,
                    fontsize=6, color="0.35", ha="left", va="bottom")
        ax.set_title("PSNR - decode speed - training time (circle area = encode time)")
        return save_figure(fig, out_base)


# ----------------------------------------------------------------------------------------------
def find_histories(results: str | os.PathLike, dataset: str,
                   cells: list[tuple[str, str]] | None = None) -> list[tuple[str, str, Path]]:
    """(codec, point, path) of every history.csv of a dataset (or of the given (codec, point) cells)."""
    root = Path(results) / "encoded" / dataset
    out = []
    if cells is not None:
        for codec, point in cells:
            p = root / codec / point / history.FILE
            if p.exists():
                out.append((codec, point, p))
        return out
    for p in sorted(root.glob(f"*/*/{history.FILE}")):
        out.append((p.parent.parent.name, p.parent.name, p))
    return out


def training_dynamics(results: str | os.PathLike, dataset: str, out_base: str | os.PathLike,
                      df_all: pd.DataFrame | None = None, cells: list[tuple[str, str]] | None = None) -> list[Path]:
    """The VolMicro results' Fig. 1: (a) loss, (b) PSNR (best dashed), (c) MSE, (d) Gaussian count
    (final dashed). The summary `df_all` gives each codec instance its name and look; the rate
    points of one instance differ in lightness."""
    hist = find_histories(results, dataset, cells)
    look = styles(df_all, extra=[c for c, _, _ in hist])
    n_points: dict[str, int] = {}
    panels = [("loss", "(a) total objective", True), ("psnr", "(b) PSNR (dB)", False),
              ("mse", "(c) MSE", True), ("n_gaussians", "(d) number of Gaussians", False)]
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(2, 2, figsize=(7.5, 5.2))
        axes = axes.ravel()
        used = [False] * 4
        for codec, point, path in hist:
            h = history.read(path)
            j = n_points[codec] = n_points.get(codec, -1) + 1  # the instance's j-th rate point
            st = look[codec]
            color = shade(st.color, SHADES[j % len(SHADES)])
            lab = f"{st.label} ({point})"
            for k, (col, title, logy) in enumerate(panels):
                if not h[col].notna().any():
                    continue
                y = pd.to_numeric(h[col], errors="coerce").astype(float)
                ax = axes[k]
                ax.plot(h["iteration"], y, color=color, linestyle=st.linestyle, marker=st.marker, markersize=3,
                        markevery=max(1, len(y) // 6), linewidth=0.9, label=lab)
                if col == "psnr":
                    ax.axhline(float(np.nanmax(y[np.isfinite(y)])) if np.isfinite(y).any() else np.nan,
                               color=color, linestyle="--", linewidth=0.6)
                if col == "n_gaussians":
                    ax.axhline(float(y.dropna().iloc[-1]), color=color, linestyle="--", linewidth=0.6)
                if logy and (y[np.isfinite(y)] > 0).all():
                    ax.set_yscale("log")
                used[k] = True
        for k, (col, title, _) in enumerate(panels):
            axes[k].set_title(title)
            if used[k]:
                axes[k].set_xlabel("iteration")
                axes[k].grid(True, linewidth=0.3, alpha=0.5)
            else:
                _no_data(axes[k], f"no '{col}' values in any\nhistory.csv of {dataset}")
        if any(used):
            handles, labels = axes[used.index(True)].get_legend_handles_labels()
            fig.legend(handles, labels, loc="lower center", ncol=min(3, max(1, len(labels))), frameon=False)
            fig.subplots_adjust(bottom=0.12 + 0.03 * math.ceil(len(labels) / 3), hspace=0.45, wspace=0.3)
        fig.suptitle(f"{dataset}: training dynamics" + ("" if hist else " (no training codec ran)"))
        return save_figure(fig, out_base)


# ----------------------------------------------------------------------------------------------
def nearest_points(df_all: pd.DataFrame, dataset: str, bpv: float, ctx: Context | None = None) -> list[pd.Series]:
    """For each main codec instance on a dataset, its ok row whose bpv is nearest `bpv` (log scale)."""
    ctx = ctx or Context()
    df = ok_rows(df_all)
    df = df[(df["dataset"] == dataset) & ~ablation_mask(df)]
    out = []
    for codec in ctx.codec_order(df):
        sub = df[df["codec"] == codec]
        b = sub["bpv"].astype(float)
        ok = np.isfinite(b) & (b > 0)
        if not ok.any():
            continue
        d = np.abs(np.log(b[ok]) - math.log(bpv))
        out.append(sub[ok].loc[d.idxmin()])
    return out


def _read_tif(path: Path) -> np.ndarray:
    import tifffile

    if not path.exists():
        raise VolbenchError(f"{path} does not exist; run the pipeline for that cell first")
    v = tifffile.imread(path)
    if v.ndim != 3:
        raise VolbenchError(f"{path}: expected a 3D (Z, Y, X) volume, got shape {v.shape}")
    return v


def pick_slice(vol: np.ndarray) -> int:
    """The scan-axis slice with the most structure (largest standard deviation); deterministic."""
    sd = vol.reshape(vol.shape[0], -1).astype(np.float64).std(axis=1)
    return int(np.argmax(sd))


def _slice_psnr(a: np.ndarray, b: np.ndarray, rng_: float) -> float:
    return psnr_from_mse(float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)), rng_)


def qualitative(df_all: pd.DataFrame, results: str | os.PathLike, dataset: str, out_panels: str | os.PathLike,
                out_errors: str | os.PathLike, bpv: float | None = None, ctx: Context | None = None,
                z: int | None = None) -> list[Path]:
    """Slice + MIP panels and absolute-error maps of every codec at its point nearest `bpv`."""
    ctx = ctx or Context()
    look = styles(df_all)
    bpv = float(bpv if bpv is not None else ctx.matched_bpp[0])
    results = Path(results)
    orig = _read_tif(results / "data" / dataset / "volume.tif")
    z = pick_slice(orig) if z is None else int(z)
    if not 0 <= z < orig.shape[0]:
        raise VolbenchError(f"slice {z} is outside {dataset}'s {orig.shape[0]} slices")
    vmin, vmax = float(orig.min()), float(orig.max())
    rng_ = vmax - vmin
    lo, hi = (float(x) for x in np.percentile(orig, [0.1, 99.9]))
    if hi <= lo:
        lo, hi = vmin, vmax if vmax > vmin else vmin + 1
    ref_slice = orig[z].astype(np.float32)
    ref_mip = orig.max(axis=0).astype(np.float32)
    panels = [("original", None, ref_slice, ref_mip, None)]
    missing = []
    for r in nearest_points(df_all, dataset, bpv, ctx):
        path = results / "decoded" / dataset / r["codec"] / r["point"] / "volume.tif"
        if not path.exists():
            missing.append(f"{r['codec']}/{r['point']}")
            continue
        rec = _read_tif(path)
        if rec.shape != orig.shape:
            raise VolbenchError(f"{path}: shape {rec.shape} differs from the original {orig.shape}; re-run decode")
        s = rec[z].astype(np.float32)
        panels.append((look[r["codec"]].label, r, s, rec.max(axis=0).astype(np.float32),
                       _slice_psnr(orig[z], rec[z], rng_)))
        del rec
    n = len(panels)
    aspect = orig.shape[1] / max(orig.shape[2], 1)
    w = 2.1
    paths = []
    with plt.rc_context(_RC):
        # height from the image size the columns leave (equal aspect), plus room for the titles
        cell = w * 0.92
        height = 2 * cell * aspect * 1.05 + 0.85
        fig, axes = plt.subplots(2, n, figsize=(w * n, height), squeeze=False,
                                 gridspec_kw={"hspace": 0.04, "wspace": 0.04, "left": 0.03, "right": 0.99,
                                              "bottom": 0.01, "top": 1 - 0.8 / height})
        for j, (name, r, s, mip, p) in enumerate(panels):
            for i, img in enumerate((s, mip)):
                ax = axes[i, j]
                ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
            title = name if r is None else f"{name}\n{r['point']}, {float(r['bpv']):.3g} bpv"
            axes[0, j].set_title(title, fontsize=7)
            if p is not None:
                txt = "∞ dB" if math.isinf(p) else f"{p:.2f} dB"
                axes[0, j].text(0.97, 0.03, txt, color="yellow", fontsize=7, ha="right", va="bottom",
                                transform=axes[0, j].transAxes,
                                bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0})
        axes[0, 0].set_ylabel(f"slice z={z}")
        axes[1, 0].set_ylabel("MIP along Z")
        sub = f"{dataset}: each codec at its rate point nearest {bpv:g} bpv"
        if missing:
            sub += f" (no decoded volume: {', '.join(missing)})"
        fig.suptitle(sub, fontsize=8)
        paths += save_figure(fig, out_panels)

        m = max(n - 1, 1)
        fig, axes = plt.subplots(1, m, figsize=(w * m + 0.6, w * aspect + 0.8), squeeze=False)
        errs = [np.abs(s - ref_slice) for _, r, s, _, _ in panels[1:]]
        emax = 1.0
        if errs:
            allv = np.concatenate([e.ravel() for e in errs])
            emax = float(np.percentile(allv, 99.5)) or float(allv.max()) or 1.0
        im = None
        for j, (name, r, s, _, p) in enumerate(panels[1:]):
            ax = axes[0, j]
            im = ax.imshow(errs[j], cmap="inferno", vmin=0, vmax=emax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name}\n{r['point']}, MAE {float(errs[j].mean()):.3g}", fontsize=7)
        if im is None:
            _no_data(axes[0, 0], "no decoded volume to compare")
        else:
            fig.colorbar(im, ax=axes[0, :].tolist(), fraction=0.03, pad=0.02, label="|decoded - original|")
        fig.suptitle(f"{dataset}: absolute error, slice z={z} (colour scale clipped at the 99.5th percentile)",
                     fontsize=8)
        paths += save_figure(fig, out_errors)
    return paths
