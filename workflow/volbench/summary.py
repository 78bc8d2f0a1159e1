"""The summary table (CSV + Markdown) and the per-dataset rate-distortion plots."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import io

#: the metrics of a cell (volbench.metrics), in summary order
METRICS = ["psnr_2d", "ssim_2d", "psnr_3d", "ssim_3d", "lpips", "psnr_fg", "ssim_fg"]
#: how the tables and figures present a codec (Codec.describe), copied from encode.json
CODEC_COLUMNS = ["display_name", "family", "table_order", "trains"]
#: figures of the encoded file the tables need (Codec.file_stats), copied from encode.json
FILE_STATS = ["n_gaussians"]
#: the columns of summary.csv (one row per dataset x codec x rate point), in order: the one
#: definition that scoring (pipeline.score_cell), the summary and volbench.paper use
COLUMNS = [
    "dataset", "codec", "codec_type", "point", "params", "target_bpp", "knob", "knob_value", "bytes",
    "original_bytes", "compression_ratio", "bpv", *METRICS, "encode_seconds", "decode_seconds",
    "decode_mvox_s", "encode_peak_mb", "decode_peak_mb", "n_voxels", "lossless", "status", "error", "versions",
    "foreground_fraction", "mse", "rate_hit", "metrics_2d_source", *CODEC_COLUMNS, *FILE_STATS,
]
#: metrics_2d_source values: where psnr_2d / ssim_2d come from (Codec.rendered_slices)
SOURCE_VOLUME, SOURCE_RENDERED = "decoded volume", "rendered slices"
#: the numeric columns (what a reader of summary.csv parses as numbers)
NUMERIC = [
    "target_bpp", "bytes", "original_bytes", "compression_ratio", "bpv", *METRICS, "encode_seconds",
    "decode_seconds", "decode_mvox_s", "encode_peak_mb", "decode_peak_mb", "n_voxels", "foreground_fraction",
    "mse", "table_order", *FILE_STATS,
]

_MD = ["dataset", "codec", "point", "bytes", "compression_ratio", "bpv", "psnr_2d", "ssim_2d", "psnr_3d",
       "ssim_3d", "lpips", "psnr_fg", "encode_seconds", "decode_seconds", "decode_mvox_s", "status"]


def load(paths) -> "pd.DataFrame":  # noqa: F821
    import pandas as pd

    rows = [io.read_json(p) for p in paths]
    df = pd.DataFrame(rows)
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = None
    extra = [c for c in df.columns if c not in COLUMNS]
    df = df[COLUMNS + extra]
    df = df.sort_values(["dataset", "codec", "bpv", "point"], na_position="last", kind="stable")
    return df.reset_index(drop=True)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf"
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def markdown(df, columns=_MD) -> str:
    cols = [c for c in columns if c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    failed = df[df["status"] != "ok"]
    if len(failed):
        lines += ["", "Failed cells:", ""]
        lines += [f"- {r.dataset} / {r.codec} / {r.point}: {r.error}" for r in failed.itertuples()]
    return "\n".join(lines) + "\n"


def summarize(metric_paths, out_csv, out_md) -> None:
    df = load(metric_paths)
    io.atomic_write_text(out_csv, df.to_csv(index=False))
    io.atomic_write_text(out_md, "# volbench summary\n\nOne row per dataset x codec x rate point. "
                 "PSNR data range: the original's max - min; inf = exact.\n\n" + markdown(df))


def plot_rd(summary_csv, dataset: str, out) -> None:
    """PSNR (2D, 3D), SSIM and LPIPS against bits per voxel, a line per codec."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(summary_csv)
    df = df[(df["dataset"] == dataset) & (df["status"] == "ok")]
    metrics = [("psnr_2d", "2D PSNR (dB)"), ("psnr_3d", "3D PSNR (dB)"), ("ssim_3d", "3D SSIM"), ("lpips", "LPIPS")]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for ax, (col, label) in zip(axes, metrics):
        for codec, g in df.groupby("codec"):
            g = g.sort_values("bpv")
            y = g[col].astype(float).replace([np.inf], np.nan)
            if y.notna().any():
                ax.plot(g["bpv"], y, marker="o", label=codec)
            lossless = g[np.isinf(g[col].astype(float))]
            for bpv in lossless["bpv"]:
                ax.axvline(bpv, ls=":", lw=0.8, color="gray")
        ax.set_xscale("log")
        ax.set_xlabel("bits per voxel")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{dataset}: rate-distortion (dotted: lossless codecs' rates)")
    fig.tight_layout()
    try:
        io.atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, format=Path(out).suffix.lstrip(".")))
    finally:
        plt.close(fig)
