"""The papers' figures, from the summary and the results tree (matplotlib, Agg, PNG + PDF).

* :func:`rd_curves`: rate-distortion, one figure per dataset and metric (psnr_2d, psnr_3d, ssim_3d,
  lpips against bits per voxel, log scale), a line per codec instance; :func:`rd_overview` the
  four metrics side by side (results/plots/{dataset}/rd.png);
* :func:`bubble_chart`: the GaussianPile paper's Fig. 1a, PSNR against decode speed, circle area =
  encode (training) time, written beside each circle without overlap (:func:`place_labels`), one
  circle per codec instance and rate point, averaged over datasets;
* :func:`training_dynamics`: the VolMicro results' Fig. 1, loss / PSNR / MSE / Gaussian count
  against iteration, from the history.csv files the training codecs write (volbench.history);
* :func:`qualitative`: the same slice for every codec at its rate point nearest a matched bpv,
  with the slice PSNR written on it and its maximum-intensity projection below, and the
  absolute-error maps of that slice on one colour scale, in grids of at most five columns.

Each codec instance has one look in every figure (volbench.paper.style: the hue from its codec's
family, shade, marker and line style per instance), and every artist drawn for an instance carries
its name as gid (what the tests check). One legend per figure, outside the axes, lists every
instance drawn. Every output is written atomically (a temporary file renamed into place).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

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
from .selection import (LOSSLESS, Context, ablation_mask, instance_labels, ok_rows, point_rates,  # noqa: E402
                        point_text)
from .style import SHADES, Style, shade, styles  # noqa: E402

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
def _labels(df: pd.DataFrame, look: dict[str, Style]) -> dict[str, str]:
    """{codec: legend label} for the rows a figure shows (a lossless mode named by what it achieved
    there: "near-lossless" on a dataset where it is not bit-exact); the style's label otherwise."""
    here = instance_labels(df) if len(df) else {}
    return {c: here.get(c, st.label) for c, st in look.items()}


def _legend_outside(fig, handles: list, labels: list[str], ax=None, ncol: int = 1):
    """One legend right of the axes (or of the figure's axes), outside them."""
    if not handles:
        return None
    if ax is not None:
        return ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False,
                         borderaxespad=0.0, ncol=ncol)
    return fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.93), frameon=False, ncol=ncol)


def _rd_axes(ax, df: pd.DataFrame, codecs: list[str], m: str, look: dict[str, Style], handles: dict[str, Any],
             lossless: set[str], names: dict[str, str]) -> int:
    """Draw metric m against bpv for each codec instance into ax, each in its own style; a codec
    with no finite value (lossless: every value infinite) is a dotted vertical line at its rate
    (and goes into `lossless`). Adds each drawn instance's legend handle to `handles` (first one
    wins). Returns the count drawn."""
    n = 0
    for codec in codecs:
        sub = df[df["codec"] == codec]
        pts = sub[["bpv", m]].astype(float)
        pts = pts[np.isfinite(pts["bpv"]) & (pts["bpv"] > 0)].sort_values("bpv")
        fin = pts[np.isfinite(pts[m])]
        st = look[codec]
        if fin.empty:
            if not pts.empty and np.isinf(pts[m]).any():
                h = ax.axvline(float(pts["bpv"].min()), linestyle=":", color=st.color, linewidth=1.4, gid=codec,
                               label=_lossless_name(names[codec]))
                handles.setdefault(codec, h)
                lossless.add(codec)
                n += 1
            continue
        h, = ax.plot(fin["bpv"], fin[m], markersize=4, linewidth=1.2, gid=codec, label=names[codec], **st.line())
        handles.setdefault(codec, h)
        n += 1
    return n


def _lossless_name(name: str) -> str:
    return name if "lossless" in name else f"{name} (lossless)"


def _legend_entries(codecs: list[str], handles: dict[str, Any], names: dict[str, str], lossless: set[str]):
    """(handles, labels) of the drawn instances in codec order; a lossless one's label says so."""
    hs = [handles[c] for c in codecs if c in handles]
    ls = [_lossless_name(names[c]) if c in lossless else names[c] for c in codecs if c in handles]
    return hs, ls


def _rd_inputs(df_all: pd.DataFrame, dataset: str, ctx: Context):
    """What the rate-distortion figures of one dataset draw: the codec styles (of the whole
    summary, so every figure agrees), the dataset's ok non-ablation rows, their labels and the
    codec order."""
    look = styles(df_all)
    df = ok_rows(df_all)
    df = df[(df["dataset"] == dataset) & ~ablation_mask(df)]
    return look, df, _labels(df, look), ctx.codec_order(df)


def rd_curves(df_all: pd.DataFrame, dataset: str, out_dir: str | os.PathLike, ctx: Context | None = None,
              metrics=tuple(RD_METRICS)) -> list[Path]:
    """One figure per metric: out_dir/rd_<metric>.png/.pdf, the legend right of the axes."""
    ctx = ctx or Context()
    look, df, names, codecs = _rd_inputs(df_all, dataset, ctx)
    paths = []
    for m in metrics:
        with plt.rc_context(_RC):
            fig, ax = plt.subplots(figsize=(4.4, 3.2))
            handles: dict[str, Any] = {}
            lossless: set[str] = set()
            n = _rd_axes(ax, df, codecs, m, look, handles, lossless, names)
            for b in ctx.matched_bpp:
                ax.axvline(b, color="0.7", linewidth=0.6, linestyle="--", zorder=0)
            if n == 0:
                _no_data(ax, f"no finite {m} values for {dataset}\n(metric disabled or every cell failed)")
            else:
                ax.set_xscale("log")
                ax.set_xlabel("bits per voxel (bpv)")
                ax.set_ylabel(METRIC_LABELS.get(m, m))
                ax.grid(True, which="both", linewidth=0.3, alpha=0.5)
                _legend_outside(fig, *_legend_entries(codecs, handles, names, lossless), ax=ax)
            ax.set_title(f"{dataset}: {METRIC_LABELS.get(m, m)} vs rate")
            paths += save_figure(fig, Path(out_dir) / f"rd_{m}")
    return paths


#: the panels of the overview figure (results/plots/{dataset}/rd.png)
OVERVIEW_METRICS = ("psnr_2d", "psnr_3d", "ssim_3d", "lpips")


def rd_overview(df_all: pd.DataFrame, dataset: str, out: str | os.PathLike, ctx: Context | None = None,
                metrics=OVERVIEW_METRICS) -> list[Path]:
    """The overview: one panel per metric against bpv, every instance in its own style in every
    panel, one legend right of the panels listing every instance drawn in any of them. `out`: the
    PNG (or PDF) to write."""
    ctx = ctx or Context()
    look, df, names, codecs = _rd_inputs(df_all, dataset, ctx)
    out = Path(out)
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.0 * len(metrics), 3.0), squeeze=False)
        handles: dict[str, Any] = {}
        lossless: set[str] = set()
        for ax, m in zip(axes[0], metrics):
            n = _rd_axes(ax, df, codecs, m, look, handles, lossless, names)
            if n == 0:
                _no_data(ax, f"no finite {m} values")
            else:
                ax.set_xscale("log")
                ax.set_xlabel("bits per voxel (bpv)")
                ax.grid(True, which="both", linewidth=0.3, alpha=0.5)
            ax.set_title(METRIC_LABELS.get(m, m))
        fig.suptitle(f"{dataset}: rate-distortion (dotted vertical line: a lossless codec's rate)")
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        _legend_outside(fig, *_legend_entries(codecs, handles, names, lossless))
        return save_figure(fig, out.with_suffix(""), formats=(out.suffix.lstrip(".") or "png",))


# ----------------------------------------------------------------------------------------------
def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """The area two boxes (x0, y0, x1, y1) share."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def place_labels(ax, xy: list[tuple[float, float]], texts: list[str], radii_pt: list[float],
                 fontsize: float = 6.5, color: str = "0.15") -> list:
    """Write each text beside its point (data coordinates xy; the point's circle has radius
    radii_pt, in points) so that no two texts overlap, no text covers another point's centre or
    leaves the axes: inside the circle when the text fits there, else the first free spot on rings
    around it (above, below, right, left, then the diagonals; nearer rings first). A text set away
    from its circle gets a thin leader line. The axes limits must be final. Returns the annotations."""
    fig = ax.figure
    fig.canvas.draw()
    rend = fig.canvas.get_renderer()
    px = fig.dpi / 72.0
    centres = ax.transData.transform(np.asarray(xy, dtype=float).reshape(-1, 2))
    radii = [float(r) * px for r in radii_pt]
    box = ax.get_window_extent(rend)
    frame = (box.x0 + 1, box.y0 + 1, box.x1 - 1, box.y1 - 1)
    sizes = []
    for t in texts:
        probe = ax.text(0, 0, t, fontsize=fontsize, ha="center", va="center", linespacing=1.0)
        e = probe.get_window_extent(rend)
        sizes.append((e.width + 2, e.height + 1))
        probe.remove()
    # every point's centre is an obstacle (a small square), so no text hides a small circle
    dots = [(cx - 3, cy - 3, cx + 3, cy + 3) for cx, cy in centres]
    placed: list[tuple[float, float, float, float]] = []
    angles = [90, 270, 0, 180, 45, 135, 315, 225, 60, 120, 300, 240, 20, 160, 340, 200]
    out = []
    for i in sorted(range(len(texts)), key=lambda i: (centres[i][0], centres[i][1])):
        (cx, cy), r, (w, h) = centres[i], radii[i], sizes[i]
        cands = []
        if 2 * r > math.hypot(w, h) * 1.05:
            cands.append((cx, cy))
        for d in (r + 2, r + 6, r + 12, r + 20, r + 32, r + 48, r + 70):
            for a in angles:
                ux, uy = math.cos(math.radians(a)), math.sin(math.radians(a))
                cands.append((cx + ux * (d + w / 2), cy + uy * (d + h / 2)))
        best, best_cost = None, math.inf
        for k, (x, y) in enumerate(cands):
            bb = (x - w / 2, y - h / 2, x + w / 2, y + h / 2)
            cost = sum(_overlap(bb, o) for o in placed)
            cost += sum(_overlap(bb, d) for j, d in enumerate(dots) if j != i)
            inside = bb[0] >= frame[0] and bb[1] >= frame[1] and bb[2] <= frame[2] and bb[3] <= frame[3]
            cost += 0 if inside else 1e6
            if cost == 0:
                best = (x, y)
                break
            if cost + k * 1e-3 < best_cost:
                best, best_cost = (x, y), cost + k * 1e-3
        x, y = best
        placed.append((x - w / 2, y - h / 2, x + w / 2, y + h / 2))
        far = math.hypot(x - cx, y - cy) > r + max(w, h) / 2 + 4
        ann = ax.annotate(texts[i], (xy[i][0], xy[i][1]), xytext=((x - cx) / px, (y - cy) / px),
                          textcoords="offset points", fontsize=fontsize, ha="center", va="center", color=color,
                          linespacing=1.0, annotation_clip=False,
                          arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.45", "shrinkA": 0,
                                      "shrinkB": radii_pt[i]} if far else None)
        out.append(ann)
    return out


def bubble_chart(df_all: pd.DataFrame, out_base: str | os.PathLike, ctx: Context | None = None,
                 psnr: str = "psnr_2d") -> list[Path]:
    """The GaussianPile paper's Fig. 1a: PSNR against decode speed, one circle per codec instance
    and rate point, its area proportional to the encode (training) time, which is written beside
    it (as in the tables: 7ms, 6.0s, 1m24s). PSNR and speed are means over the datasets (speed:
    geometric); a circle whose mean leaves out a dataset (lossless there, PSNR = ∞, or no result)
    is marked * and the note under the axes says which and why. An instance lossless everywhere
    is not drawn (the note names it)."""
    ctx = ctx or Context()
    look = styles(df_all)
    df = ok_rows(df_all)
    df = df[~ablation_mask(df)]
    datasets = ctx.dataset_order(df)
    recs = []
    lossless: dict[str, None] = {}
    partial: dict[str, dict[str, str]] = {}  # codec -> {dataset: why it is left out}
    for codec in ctx.codec_order(df):
        sub = df[df["codec"] == codec]
        for point, g in sub.groupby("point", sort=False):
            q, sp, enc, why = [], [], [], {}
            for ds in datasets:
                r = g[g["dataset"] == ds]
                if r.empty:
                    why[ds] = "no result"
                    continue
                r = r.iloc[0]
                v, speed = float(r[psnr]), float(r["decode_mvox_s"])
                if math.isinf(v):
                    why[ds] = "lossless, PSNR = ∞"
                elif not math.isfinite(v) or not (math.isfinite(speed) and speed > 0):
                    why[ds] = "no PSNR or speed"
                else:
                    q.append(v)
                    sp.append(speed)
                    enc.append(float(r["encode_seconds"]))
            if not q:
                if any(w.startswith("lossless") for w in why.values()):
                    lossless.setdefault(look[codec].label, None)
                continue
            if why:
                partial.setdefault(codec, {}).update(why)
            recs.append({"codec": codec, "point": point, "psnr": float(np.mean(q)),
                         "speed": float(np.exp(np.mean(np.log(sp)))), "seconds": float(np.nanmean(enc)),
                         "partial": bool(why)})
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        notes = []
        if not recs:
            _no_data(ax, "no cell with finite PSNR and decode speed")
        else:
            r = pd.DataFrame(recs)
            secs = r["seconds"].fillna(0).clip(lower=0)
            top = max(float(secs.max()), 1e-9)
            sizes = (25 + 1400 * (secs / top)).to_numpy()  # area proportional to time (plus a visible floor)
            handles, labels = [], []
            for i, row in r.iterrows():
                st = look[row["codec"]]
                ax.scatter(row["speed"], row["psnr"], s=sizes[i], color=st.color, alpha=0.55, gid=row["codec"],
                           edgecolors=[shade(st.color, -0.45)], linewidths=0.9 if row["partial"] else 0.6,
                           linestyle="--" if row["partial"] else "-", zorder=2)
                if st.label not in labels:
                    handles.append(matplotlib.lines.Line2D([], [], linestyle="", marker="o", markersize=7,
                                                           color=st.color, markeredgecolor=shade(st.color, -0.45)))
                    labels.append(st.label)
            ax.set_xscale("log")
            ax.margins(0.12)
            ax.autoscale_view()
            ax.set_xlim(*ax.get_xlim())
            ax.set_ylim(*ax.get_ylim())
            plain = matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{v:g}")
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
                lambda v, _pos: f"{v:g}" if f"{v:.1g}"[0] in "25" else ""))
            ax.set_xlabel("decode speed (MVox/s, geometric mean over the datasets)")
            ax.set_ylabel(f"{RD_METRICS.get(psnr, psnr)}, mean over the datasets")
            ax.grid(True, which="both", linewidth=0.3, alpha=0.5)
            _legend_outside(fig, handles, labels, ax=ax)
            texts = [fmt_duration(t) + ("*" if pa else "") for t, pa in zip(r["seconds"], r["partial"])]
            place_labels(ax, list(zip(r["speed"], r["psnr"])), texts, [math.sqrt(s) / 2 for s in sizes])
            for codec, why in partial.items():
                by: dict[str, list[str]] = {}
                for ds, w in why.items():
                    by.setdefault(w, []).append(ds)
                notes.append(f"* {look[codec].label}: mean without " +
                             "; ".join(f"{', '.join(d)} ({w})" for w, d in by.items()))
        if lossless:
            notes.append("Not shown (lossless on every dataset, PSNR = ∞): " + "; ".join(lossless))
        if notes:
            ax.text(0.0, -0.16, "\n".join(notes), transform=ax.transAxes, fontsize=6.5, color="0.25",
                    ha="left", va="top", wrap=False)
        ax.set_title("PSNR - decode speed - encode time (circle area and label: encode time, training included)")
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


def _curve_key(h: pd.DataFrame) -> bytes:
    """What two training runs must share to draw the same curves: every logged quantity of every
    training step (not the wall-clock seconds)."""
    cols = ["iteration", "loss", "psnr", "mse", "n_gaussians"]
    return pd.util.hash_pandas_object(h[cols].apply(pd.to_numeric, errors="coerce").round(12),
                                      index=False).to_numpy().tobytes()


def point_color(color, j: int) -> tuple[float, float, float]:
    """The colour of an instance's j-th rate point: its own colour, then lighter and darker ones
    (lighter only, for a dark colour, where darker would not show)."""
    amount = SHADES[j % len(SHADES)]
    r, g, b = matplotlib.colors.to_rgb(color)
    if amount < 0 and 0.299 * r + 0.587 * g + 0.114 * b < 0.35:
        amount = -amount
    return shade(color, amount)


def training_dynamics(results: str | os.PathLike, dataset: str, out_base: str | os.PathLike,
                      df_all: pd.DataFrame | None = None, cells: list[tuple[str, str]] | None = None) -> list[Path]:
    """The VolMicro results' Fig. 1: (a) training objective, (b) PSNR during training (of the
    step's batch or slices), with the decoded file's PSNR dashed (the history's ``decoded_file``
    row: what the file really gives, not the best of a noisy batch PSNR), (c) MSE, (d) Gaussian
    count (final dashed). Colours come from the codec's family (volbench.paper.style); the rate
    points of one instance differ in lightness. Runs whose curves are identical are drawn once,
    labelled with every rate point they stand for; a panel names the codecs that do not log its
    quantity."""
    hist = find_histories(results, dataset, cells)
    look = styles(df_all, extra=[c for c, _, _ in hist])
    if df_all is not None and len(df_all):  # each instance's runs by rate, low to high
        rates = point_rates(df_all[df_all["dataset"] == dataset])
        hist.sort(key=lambda x: (x[0], rates.get((x[0], x[1]), math.inf), x[1]))
    n_points: dict[str, int] = {}
    panels = [("loss", "(a) training objective", True),
              ("psnr", "(b) PSNR during training (dB); dashed: the decoded file's", False),
              ("mse", "(c) MSE during training", True), ("n_gaussians", "(d) number of Gaussians", False)]
    # runs with identical curves (e.g. two rate points that resolved to the same parameters) are one
    runs: list[dict[str, Any]] = []
    by_key: dict[tuple[str, bytes], dict[str, Any]] = {}
    for codec, point, path in hist:
        h = history.read(path)
        stage = h["stage"].astype(str)
        train = h[stage != "decoded_file"].reset_index(drop=True)
        final = h[stage == "decoded_file"]
        key = (codec, _curve_key(train))
        if key in by_key:
            by_key[key]["points"].append(point)
            continue
        run = {"codec": codec, "points": [point], "train": train,
               "decoded_psnr": float(pd.to_numeric(final["psnr"], errors="coerce").iloc[-1]) if len(final) else None}
        by_key[key] = run
        runs.append(run)
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(2, 2, figsize=(7.8, 5.4))
        axes = axes.ravel()
        used = [False] * 4
        missing: list[dict[str, None]] = [{} for _ in panels]
        handles, labels = [], []
        for run in runs:
            codec, h = run["codec"], run["train"]
            j = n_points[codec] = n_points.get(codec, -1) + 1  # the instance's j-th drawn run
            st = look[codec]
            color = point_color(st.color, j)
            lab = f"{st.label}, " + " = ".join(point_text(p) for p in run["points"])
            if len(run["points"]) > 1:
                lab += " (identical runs)"
            first = None
            for k, (col, title, logy) in enumerate(panels):
                y = pd.to_numeric(h[col], errors="coerce").astype(float)
                if not y.notna().any():
                    missing[k].setdefault(st.label, None)
                    continue
                ax = axes[k]
                line, = ax.plot(h["iteration"], y, color=color, linestyle=st.linestyle, marker=st.marker, gid=codec,
                                markersize=3, markevery=max(1, len(y) // 6), linewidth=0.9,
                                markerfacecolor=color if st.filled else "none")
                first = first or line
                if col == "psnr" and run["decoded_psnr"] is not None and math.isfinite(run["decoded_psnr"]):
                    ax.axhline(run["decoded_psnr"], color=color, linestyle="--", linewidth=0.7)
                if col == "n_gaussians":
                    ax.axhline(float(y.dropna().iloc[-1]), color=color, linestyle="--", linewidth=0.6)
                if logy and (y[np.isfinite(y)] > 0).all():
                    ax.set_yscale("log")
                used[k] = True
            if first is not None:
                handles.append(first)
                labels.append(lab)
        for k, (col, title, _) in enumerate(panels):
            if used[k]:
                axes[k].set_title(title + (f"\nnot logged by {', '.join(missing[k])}" if missing[k] else ""))
                axes[k].set_xlabel("iteration")
                axes[k].grid(True, linewidth=0.3, alpha=0.5)
            else:
                axes[k].set_title(title)
                who = ", ".join(missing[k]) if missing[k] else "no training codec"
                _no_data(axes[k], f"'{col}' is not logged by\n{who}")
        fig.tight_layout(rect=(0, 0, 1, 0.95), h_pad=1.2)
        if handles:
            fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, frameon=False)
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


#: the most panels side by side in the qualitative and error-map figures (a grid beyond that)
MAX_COLUMNS = 5
#: the width of one panel (inches; 5 columns stay under 2,400 px at savefig.dpi 150)
PANEL_IN = 2.5


def fmt_mae(v: float, unit: str) -> str:
    """A mean absolute error as a plain number with its unit: 1,070 grey levels, 3.4, 0.012."""
    a = abs(v)
    num = f"{v:,.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 1 else f"{v:.3f}"
    return f"{num} {unit}"


def _grid(fig_w_cells: int, n_cells: int, rows_per_cell: int, img_h: float, left: float, right: float,
          top: float, bottom: float, title_h: float):
    """Figure size and the axes boxes (inches from the bottom left) of a grid of cells: at most
    fig_w_cells columns, each cell a title band and rows_per_cell images stacked."""
    ncol = max(1, min(fig_w_cells, n_cells))
    nrow = max(1, math.ceil(n_cells / ncol))
    gx, gi, gy = 0.08, 0.04, 0.10
    block = title_h + rows_per_cell * img_h + (rows_per_cell - 1) * gi + gy
    width = left + ncol * PANEL_IN + (ncol - 1) * gx + right
    height = top + nrow * block + bottom
    boxes = []
    for i in range(n_cells):
        r, c = divmod(i, ncol)
        x = left + c * (PANEL_IN + gx)
        y_top = height - top - r * block - title_h
        boxes.append([(x, y_top - (k + 1) * img_h - k * gi, PANEL_IN, img_h) for k in range(rows_per_cell)])
    return (width, height), boxes


def _add_axes(fig, box, size):
    x, y, w, h = box
    W, H = size
    ax = fig.add_axes((x / W, y / H, w / W, h / H))
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def qualitative(df_all: pd.DataFrame, results: str | os.PathLike, dataset: str, out_panels: str | os.PathLike,
                out_errors: str | os.PathLike, bpv: float | None = None, ctx: Context | None = None,
                z: int | None = None) -> list[Path]:
    """Slice + MIP panels and absolute-error maps of every codec at its point nearest `bpv`, in grids
    of at most MAX_COLUMNS columns. Codecs whose decoded volume equals the original (lossless) are
    not drawn: one note names them."""
    ctx = ctx or Context()
    look = styles(df_all)
    ok = ok_rows(df_all)
    names = _labels(ok[(ok["dataset"] == dataset) & ~ablation_mask(ok)], look)
    bpv = float(bpv if bpv is not None else ctx.matched_bpp[0])
    results = Path(results)
    orig = _read_tif(results / "data" / dataset / "volume.tif")
    z = pick_slice(orig) if z is None else int(z)
    if not 0 <= z < orig.shape[0]:
        raise VolbenchError(f"slice {z} is outside {dataset}'s {orig.shape[0]} slices")
    unit = "grey levels" if np.issubdtype(orig.dtype, np.integer) else "intensity units"
    vmin, vmax = float(orig.min()), float(orig.max())
    rng_ = vmax - vmin
    lo, hi = (float(x) for x in np.percentile(orig, [0.1, 99.9]))
    if hi <= lo:
        lo, hi = vmin, vmax if vmax > vmin else vmin + 1
    ref_slice = orig[z].astype(np.float32)
    ref_mip = orig.max(axis=0).astype(np.float32)
    panels = [("original", None, ref_slice, ref_mip, None)]
    missing, exact = [], []
    for r in nearest_points(df_all, dataset, bpv, ctx):
        path = results / "decoded" / dataset / r["codec"] / r["point"] / "volume.tif"
        if not path.exists():
            missing.append(f"{r['codec']}/{r['point']}")
            continue
        rec = _read_tif(path)
        if rec.shape != orig.shape:
            raise VolbenchError(f"{path}: shape {rec.shape} differs from the original {orig.shape}; re-run decode")
        if np.array_equal(rec, orig):
            exact.append(names.get(r["codec"], r["codec"]))
            continue
        s = rec[z].astype(np.float32)
        panels.append((names.get(r["codec"], r["codec"]), r, s, rec.max(axis=0).astype(np.float32),
                       _slice_psnr(orig[z], rec[z], rng_)))
        del rec
    aspect = orig.shape[1] / max(orig.shape[2], 1)
    img_h = PANEL_IN * aspect
    notes = []
    if exact:
        notes.append(f"Lossless (decoded volume identical to the original, not shown): {'; '.join(exact)}.")
    if missing:
        notes.append(f"No decoded volume: {', '.join(missing)}.")

    def title(name, r):
        if r is None:
            return name
        pt, said = str(r["point"]), point_text(str(r["point"]))
        # the rate point, unless the realised bpv says it (a bpv target) or the name does (lossless)
        extra = "" if pt.startswith("target_bpp-") or said in name or (LOSSLESS in said and LOSSLESS in name) \
            else f", {said}"
        return f"{name}\n{float(r['bpv']):.3g} bpv{extra}"

    def footer(fig, size):
        if notes:
            fig.text(0.35 / size[0], 0.08 / size[1], "\n".join(notes), fontsize=8, color="0.25", ha="left",
                     va="bottom")

    paths = []
    with plt.rc_context(_RC):
        bottom = 0.2 + 0.17 * len(notes)
        size, boxes = _grid(MAX_COLUMNS, len(panels), 2, img_h, 0.35, 0.1, 0.45, bottom, 0.42)
        fig = plt.figure(figsize=size)
        for (name, r, s, mip, p), (b_slice, b_mip) in zip(panels, boxes):
            a0, a1 = _add_axes(fig, b_slice, size), _add_axes(fig, b_mip, size)
            a0.imshow(s, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest", aspect="auto")
            a1.imshow(mip, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest", aspect="auto")
            a0.set_title(title(name, r), fontsize=8.5)
            if p is not None:
                txt = "∞ dB" if math.isinf(p) else f"{p:.2f} dB"
                a0.text(0.97, 0.03, txt, color="yellow", fontsize=8, ha="right", va="bottom", transform=a0.transAxes,
                        bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0})
            if b_slice[0] < 0.36 + 0.01:  # the first column: say what the rows are
                a0.set_ylabel(f"slice z={z}", fontsize=8)
                a1.set_ylabel("MIP along Z", fontsize=8)
        fig.suptitle(f"{dataset}: each codec at its rate point nearest {bpv:g} bpv (slice PSNR in yellow)",
                     fontsize=9, y=1 - 0.12 / size[1], va="top")
        footer(fig, size)
        paths += save_figure(fig, out_panels)

        lossy = panels[1:]
        errs = [np.abs(s - ref_slice) for _, _, s, _, _ in lossy]
        emax = 1.0
        if errs:
            allv = np.concatenate([e.ravel() for e in errs])
            emax = float(np.percentile(allv, 99.5)) or float(allv.max()) or 1.0
        size, boxes = _grid(MAX_COLUMNS, max(len(lossy), 1), 1, img_h, 0.15, 1.0, 0.45, bottom, 0.6)
        fig = plt.figure(figsize=size)
        im = None
        for j, ((name, r, s, _, _), (box,)) in enumerate(zip(lossy, boxes)):
            ax = _add_axes(fig, box, size)
            im = ax.imshow(errs[j], cmap="inferno", vmin=0, vmax=emax, interpolation="nearest", aspect="auto")
            ax.set_title(f"{title(name, r)}\nMAE {fmt_mae(float(errs[j].mean()), unit)}", fontsize=8.5)
        if im is None:
            _no_data(_add_axes(fig, boxes[0][0], size), "no lossy decoded volume to compare")
        else:
            top_box = boxes[0][0]
            cax = fig.add_axes(((size[0] - 0.85) / size[0], (top_box[1]) / size[1], 0.12 / size[0],
                                top_box[3] / size[1]))
            fig.colorbar(im, cax=cax, label=f"|decoded - original| ({unit})")
        fig.suptitle(f"{dataset}: absolute error of slice z={z} (one colour scale, clipped at the 99.5th percentile)",
                     fontsize=9, y=1 - 0.12 / size[1], va="top")
        footer(fig, size)
        paths += save_figure(fig, out_errors)
    return paths
