"""The summary table (CSV + Markdown) and the per-dataset rate-distortion plots."""

from __future__ import annotations

import math

from . import io

#: the metrics of a cell (volbench.metrics), in summary order
METRICS = ["psnr_2d", "ssim_2d", "psnr_3d", "ssim_3d", "lpips", "psnr_fg", "ssim_fg"]
#: how the tables and figures present a codec (Codec.describe), copied from encode.json
CODEC_COLUMNS = ["display_name", "family", "table_order", "trains"]
#: figures of the encoded file the tables need (Codec.file_stats), copied from encode.json
FILE_STATS = ["n_gaussians"]
#: seed 001's metrics on its 10-slice sample (metrics.protocol_001; cells at a matched_bpp target)
PROTOCOL_001 = ["psnr_001", "ssim_001", "lpips_vgg_001"]
#: the columns of summary.csv (one row per dataset x codec x rate point), in order: the one
#: definition that scoring (pipeline.score_cell), the summary and volbench.paper use
COLUMNS = [
    "dataset", "codec", "codec_type", "point", "params", "target_bpp", "knob", "knob_value", "bytes",
    "original_bytes", "compression_ratio", "bpv", *METRICS, "encode_seconds", "decode_seconds",
    "decode_mvox_s", "encode_peak_mb", "decode_peak_mb", "n_voxels", "lossless", "status", "error", "versions",
    "foreground_fraction", "mse", "rate_hit", "metrics_2d_source", *CODEC_COLUMNS, *FILE_STATS, "target_missed",
    *PROTOCOL_001,
]
#: metrics_2d_source values: where psnr_2d / ssim_2d come from (Codec.rendered_slices)
SOURCE_VOLUME, SOURCE_RENDERED = "decoded volume", "rendered slices"
#: the numeric columns (what a reader of summary.csv parses as numbers)
NUMERIC = [
    "target_bpp", "bytes", "original_bytes", "compression_ratio", "bpv", *METRICS, "encode_seconds",
    "decode_seconds", "decode_mvox_s", "encode_peak_mb", "decode_peak_mb", "n_voxels", "foreground_fraction",
    "mse", "table_order", *FILE_STATS, *PROTOCOL_001,
]

_MD = ["dataset", "codec", "point", "bytes", "compression_ratio", "bpv", "psnr_2d", "ssim_2d", "psnr_3d",
       "ssim_3d", "lpips", "psnr_fg", "encode_seconds", "decode_seconds", "decode_mvox_s", "status",
       "target_missed"]


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
        lines += ["", "Failed cells (run the same snakemake command again to redo them):", ""]
        lines += [f"- {r.dataset} / {r.codec} / {r.point}: {r.error}" for r in failed.itertuples()]
    missed = df[df["target_missed"].eq(True)] if "target_missed" in df.columns else df[:0]
    if len(missed):
        lines += ["", "Missed targets (target_missed: the target_bpp lies outside what the codec's rate knob "
                  "reaches; the row is the closest file it makes):", ""]
        lines += [f"- {r.dataset} / {r.codec} / {r.point}: target {_fmt(r.target_bpp)} bpv, realised "
                  f"{_fmt(r.bpv)} bpv at {r.knob}={_fmt(r.knob_value)}" for r in missed.itertuples()]
    return "\n".join(lines) + "\n"


def summarize(metric_paths, out_csv, out_md) -> None:
    df = load(metric_paths)
    io.atomic_write_text(out_csv, df.to_csv(index=False))
    io.atomic_write_text(out_md, "# volbench summary\n\nOne row per dataset x codec x rate point. "
                 "PSNR data range: the original's max - min; inf = exact.\n\n" + markdown(df))


def plot_rd(summary_csv, dataset: str, out) -> None:
    """PSNR (2D, 3D), SSIM and LPIPS against bits per voxel, a line per codec instance, each in the
    style it has in every figure of the run (volbench.paper.style), one legend for all panels."""
    from .paper.figures import rd_overview
    from .paper.selection import load_summary

    rd_overview(load_summary(summary_csv), dataset, out)
