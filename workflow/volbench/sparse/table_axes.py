"""Seed 004 Tables 2-3 layout: per axis (axial, coronal, sagittal) PSNR, SSIM and semantic loss
(mean +/- std over the slices along that axis), for the methods that render any axis (the
compositing Gaussians, volbench.sparse.composite_fit), plus Dice per class on the held-out axial
slices and, as a model-free reference, the Dice of copying the nearest training slice's labels.

What the axes mean here (volbench.sparse.score): axial = the held-out slices of the split; coronal
and sagittal = every slice of the volume along that axis, rendered by the model, which crosses
rows of training and of held-out slices (seed 004 renders "novel perspectives" the same way).
Seed 004's Tables 2-3 (prostate MRI, HVSMR-2.0 cardiac MRI; other volumes than ours) are shown
under each block for orientation, from volbench/paper/published.csv.

Outputs: CSV (one row per dataset x fraction x method x axis, and the published rows), Markdown,
HTML.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import io
from .table import _num, input_set, mean_std, render_html, render_markdown

AXES = ("axial", "coronal", "sagittal")
CSV_COLUMNS = ["dataset", "fraction", "input_set", "method", "method_type", "display_name", "axis", "n_slices",
               "psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "semantic_loss_mean", "semantic_loss_std", "dice",
               "dice_nearest_labels", "classes", "source", "status"]
HEADER = ["Input set", "Method", "Axis", "PSNR (↑)", "SSIM (↑)", "Semantic loss (↓)", "Dice per class (↑)"]
PUBLISHED_TABLES = {"Table 2": "prostate MRI", "Table 3": "HVSMR-2.0"}


def rows_from_scores(score_files) -> list[dict]:
    out = []
    for f in score_files:
        s = io.read_json(f)
        classes = s.get("classes") or []
        for name in s.get("method_order") or list(s["methods"]):
            r = s["methods"][name]
            if r.get("status") != "ok" or not r.get("axes"):
                continue
            for axis in AXES:
                a = r["axes"].get(axis)
                if a is None:
                    continue
                row = {"dataset": s["dataset"], "fraction": s["fraction"],
                       "input_set": input_set(s["fraction"], s["n_train"], s["depth"]), "method": name,
                       "method_type": r.get("method_type"), "display_name": r.get("display_name") or name,
                       "axis": axis, "n_slices": a.get("n_slices"), "classes": json.dumps(classes),
                       "source": "volbench",
                       "dice": json.dumps(r.get("dice")) if axis == "axial" and r.get("dice") is not None else "",
                       "dice_nearest_labels": (json.dumps(s.get("dice_nearest_labels"))
                                               if axis == "axial" and s.get("dice_nearest_labels") else "")}
                for m in ("psnr", "ssim", "semantic_loss"):
                    row[f"{m}_mean"], row[f"{m}_std"] = a.get(f"{m}_mean"), a.get(f"{m}_std")
                out.append(row)
    return out


def published_rows(path=None) -> list[dict]:
    try:
        from ..paper import published
    except Exception:  # pragma: no cover
        return []
    csv_path = Path(path) if path else published.CSV_PATH
    if not csv_path.exists():
        return []
    rows: dict[tuple[str, str], dict] = {}
    for table, dataset in PUBLISHED_TABLES.items():
        try:
            recs = published.lookup("004", table, path=csv_path)
        except Exception:
            continue
        for r in recs:
            axis = r.setting.replace(" ", "").lower()
            row = rows.setdefault((table, axis), {
                "dataset": r.dataset or dataset, "fraction": "", "input_set": f"seed 004 {table}",
                "method": r.method, "display_name": f"Tri-plane 3DGS (seed 004, {r.dataset or dataset})",
                "axis": axis, "source": f"004 {table} (published)", "status": "published"})
            metric = r.metric.removesuffix("_std")
            row[f"{metric}_{'std' if r.metric.endswith('_std') else 'mean'}"] = r.value
    return list(rows.values())


def _dice(row, classes) -> str:
    if not row.get("dice"):
        return ""
    vals = json.loads(row["dice"])
    names = classes or [f"class {k}" for k in range(len(vals))]
    parts = [f"{n} {v:.3f}" for n, v in zip(names, vals) if _num(v) is not None]
    ref = json.loads(row["dice_nearest_labels"]) if row.get("dice_nearest_labels") else None
    s = ", ".join(parts)
    if ref:
        s += " (nearest-slice labels: " + ", ".join(f"{v:.3f}" for v in ref if _num(v) is not None) + ")"
    return s


def _cells(row) -> list[str]:
    classes = json.loads(row["classes"]) if row.get("classes") else []
    name = row["display_name"] if row.get("status") != "published" else f"*{row['display_name']}, published*"
    return [name, row["axis"].capitalize(), mean_std(row.get("psnr_mean"), row.get("psnr_std"), 2),
            mean_std(row.get("ssim_mean"), row.get("ssim_std"), 4),
            mean_std(row.get("semantic_loss_mean"), row.get("semantic_loss_std"), 4), _dice(row, classes)]


def blocks(rows, published):
    out = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        body = []
        mine = [r for r in rows if r["dataset"] == ds]
        for frac in dict.fromkeys(r["fraction"] for r in mine):
            group = [r for r in mine if r["fraction"] == frac]
            for i, r in enumerate(group):
                body.append([r["input_set"] if i == 0 else "", *_cells(r)])
        for i, p in enumerate(published):
            body.append([p["input_set"] if i == 0 or published[i - 1]["input_set"] != p["input_set"] else "",
                         *_cells(p)])
        out.append((ds, body))
    return out


TITLE = "Sparse slices per axis: PSNR, SSIM, semantic loss (seed 004 Tables 2-3 layout)"
NOTE = ("Mean ± std (population) over the slices along each axis: axial = the held-out slices; coronal and "
        "sagittal = every slice of the volume along that axis as the model renders it (rows of training and "
        "held-out slices). Semantic loss: mean over pixels and classes of (rendered class map − one-hot labels)². "
        "Dice per class: on the held-out axial slices, pooled; in brackets the Dice of copying the nearest "
        "training slice's labels (no model). Published rows: seed 004 Tables 2-3 (prostate MRI, cardiac MRI: "
        "other volumes than ours, for orientation only; the paper does not say which fraction of slices).")


def markdown(rows, published) -> str:
    return render_markdown(TITLE, NOTE, HEADER, blocks(rows, published),
                           empty="No method rendering every axis ran (config `sparse_slices.methods`: innergs, "
                                 "triplane)." if not rows else "")


def to_html(rows, published) -> str:
    return render_html(TITLE, NOTE, HEADER, blocks(rows, published), "sparse slices per axis")


def write_table(score_files, out_base, published_path=None) -> list[dict]:
    rows = rows_from_scores(score_files)
    pub = published_rows(published_path)
    base = Path(out_base)
    io.write_csv(f"{base}.csv", rows + pub, CSV_COLUMNS)
    io.atomic_write_text(f"{base}.md", markdown(rows, pub))
    io.atomic_write_text(f"{base}.html", to_html(rows, pub))
    return rows + pub

