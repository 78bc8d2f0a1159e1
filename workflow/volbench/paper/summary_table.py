"""The summary as a table a person reads (``results/tables/summary.html``, in the report).

One block per dataset, one row per codec instance and rate point (instances in config order, the
points of an instance by rate), named as in every table and figure (selection's naming scheme),
with the rate point as a reader says it, and the numbers in units: bits per voxel, the compressed
size in kB or MB, the compression ratio, 2D/3D PSNR and SSIM, LPIPS, encode and decode time and
decode throughput. Nothing is bold: this is the record, not a ranking (the paper tables rank).
A failed cell keeps its row (dashes, a marker) and its reason under the table; a cell that missed
its rate target (``target_missed``) is marked. summary.csv keeps every column at full precision.
"""

from __future__ import annotations

import math

import pandas as pd

from .formatting import Col, Row, Table
from .selection import (FOOTNOTES, Context, Method, ablation_mask, cell, flag_row, instance_label, instance_labels,
                        lossless_intent, method_rows, metric, point_rates, point_text)

COLUMNS = [
    ("point", "Rate point", "text"), ("bpv", "bpv", "bpv"), ("size_mb", "Size", "mb"),
    ("compression_ratio", "Ratio", "ratio"), ("psnr_2d", "2D PSNR (dB)", "psnr"), ("psnr_3d", "3D PSNR (dB)", "psnr"),
    ("ssim_2d", "2D SSIM", "ssim"), ("ssim_3d", "3D SSIM", "ssim"), ("lpips", "LPIPS", "lpips"),
    ("encode_seconds", "Encode", "seconds"), ("decode_seconds", "Decode", "seconds"),
    ("decode_mvox_s", "Decode (MVox/s)", "mvox"),
]


def summary_table(df: pd.DataFrame, ctx: Context | None = None) -> Table:
    """The summary (a prepared frame, selection.prepare) as a Table, ablation instances included."""
    ctx = ctx or Context()
    cols = [Col(k, label, "", None, kind, unit="MB" if kind == "mb" else "") for k, label, kind in COLUMNS]
    footnotes = {**FOOTNOTES, "failed": "failed: no result (the reason is under the table and in summary.csv "
                                        "'error')"}
    rows: list[Row] = []
    failed: list[str] = []
    intent = lossless_intent(df[df["status"].str.lower() == "ok"])
    for ds in ctx.dataset_order(df):
        here = df[df["dataset"] == ds]
        ok = here[here["status"].str.lower() == "ok"]
        names = instance_labels(ok)  # a lossless mode named by what it achieved here
        rates = point_rates(ok)
        abl = ablation_mask(here)
        methods = method_rows(here, ctx)  # the main instances, then the ablations, each by rate
        for codec in dict.fromkeys(here.loc[abl, "codec"]):
            sub = here[here["codec"] == codec]
            pts = sorted(dict.fromkeys(sub["point"]), key=lambda p: rates.get((codec, p), math.inf))
            methods += [Method(codec, sub["codec_type"].iloc[0], sub["display_name"].iloc[0], p) for p in pts]
        for m in methods:
            r = cell(here, ds, m.codec, m.point)
            if r is None:
                continue
            vals = {c.key: metric(r, c.key) for c in cols if c.key != "point"}
            vals["point"] = point_text(m.point)
            label = names.get(m.codec) or instance_label(m.codec, m.codec_type, m.name)
            row = Row(label, vals, ds, meta={"dataset": ds, "codec": m.codec, "point": m.point})
            if str(r["status"]).lower() != "ok":
                row.values = {"point": vals["point"]}
                row.tags.append("failed")
                failed.append(f"{ds} / {m.codec} / {m.point}: {r.get('error') or 'no reason recorded'}")
            else:
                flag_row(row, {ds: r}, intent)
            rows.append(row)
    notes = ["One row per dataset x codec instance x rate point, the points of an instance by rate. bpv = bits per "
             "voxel (8 x the compressed file's bytes / voxels); size: the whole file the decoder reads (kB, MB = "
             "10^3, 10^6 bytes); ratio = original bytes / compressed bytes. PSNR data range: the original's max - "
             "min; ∞ = lossless (bit-exact). Encode and decode: the jobs' wall time (encode includes training). "
             "Every column at full precision: summary.csv."]
    if failed:
        notes.append("Failed cells: " + "; ".join(failed) + ".")
    if not rows:
        notes.insert(0, "No cells in the summary yet.")
    return Table("summary", "volbench summary: every dataset x codec x rate point", cols, rows, notes,
                 block_header="Dataset", footnotes=footnotes)
