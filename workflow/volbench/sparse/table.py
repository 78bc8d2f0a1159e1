"""The sparse-slice table, laid out like seed 004 Table 1: input set (fraction of the axial
slices) x method, SSIM / PSNR / LPIPS as mean +/- std over the held-out slices.

One block per dataset. Besides seed 004's three metrics each row has the PSNR difference to cubic
interpolation on the same split (the comparison the issue asks for), ``fit PSNR`` (the method's
rendering of its own training slices, volbench.sparse.run: a method whose fit is already below
another method's held-out PSNR is capacity-bound; one whose fit is far above its held-out PSNR
generalises badly between slices) and the fit time. Under each fraction, seed 004's published rows
(InnerGS and the paper's method, on its 160^3 fetal-brain ultrasound volumes, so another volume:
for orientation only) when volbench/paper/published.csv has them (``published.lookup``).

Outputs: CSV (one row per dataset x fraction x method, and the published rows with
``source`` set), Markdown and HTML (the report's).
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import Any

from .. import io
from .score import METRICS

CSV_COLUMNS = ["dataset", "fraction", "input_set", "method", "method_type", "display_name", "family", "status",
               "error", "n_train", "n_test", "ssim_mean", "ssim_std", "psnr_mean", "psnr_std", "lpips_mean",
               "lpips_std", "psnr_minus_cubic", "psnr_minus_nearest", "fit_psnr", "fit_seconds", "fit_cpu_seconds",
               "params", "versions", "source"]
HEADER = ["Input set", "Method", "SSIM (↑)", "PSNR (↑)", "LPIPS (↓)", "PSNR − cubic (dB)", "fit PSNR (dB)",
          "fit time (s)"]
DIGITS = {"ssim": 4, "psnr": 2, "lpips": 4}
#: the paper's method names as this table shows them
PUBLISHED_NAMES = {"Ours": "Tri-plane 3DGS (seed 004)", "InnerGS": "InnerGS (seed 004)"}


def input_set(fraction: float, n_train: int | None = None, depth: int | None = None) -> str:
    s = f"{100 * float(fraction):g} % axial slices"
    return s + (f" ({n_train} of {depth})" if n_train is not None and depth else "")


def _num(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def mean_std(mean, std, digits: int) -> str:
    m, s = _num(mean), _num(std)
    if m is None:
        return "—"
    return f"{m:.{digits}f} ± {s:.{digits}f}" if s is not None else f"{m:.{digits}f}"


def published_rows(path=None) -> list[dict]:
    """Seed 004 Table 1's published values as rows of this table (fraction, method, metric means and
    stds); [] when the published CSV does not exist or has no such rows."""
    try:
        from ..paper import published
    except Exception:  # pragma: no cover - the paper package is another issue's
        return []
    csv_path = Path(path) if path else published.CSV_PATH
    if not csv_path.exists():
        return []
    try:
        recs = published.lookup("004", "Table 1", path=csv_path)
    except Exception:
        return []
    rows: dict[tuple[float, str], dict] = {}
    for r in recs:
        m = re.match(r"\s*([0-9.]+)\s*%", r.setting)
        if not m:
            continue
        frac = float(m.group(1)) / 100.0
        key = (frac, r.method)
        row = rows.setdefault(key, {"fraction": frac, "method": r.method,
                                    "display_name": PUBLISHED_NAMES.get(r.method, f"{r.method} (seed 004)"),
                                    "dataset": r.dataset, "source": r.source + " (published)",
                                    "status": "published", "input_set": r.setting})
        metric = r.metric.removesuffix("_std")
        if metric in METRICS:
            row[f"{metric}_{'std' if r.metric.endswith('_std') else 'mean'}"] = r.value
    return list(rows.values())


def rows_from_scores(score_files) -> list[dict]:
    """One row per dataset x fraction x method, in the config's order of methods (the order of
    each scores.json), with the differences to cubic and nearest on the same split."""
    out = []
    for f in score_files:
        s = io.read_json(f)
        ms = s["methods"]
        ref = {t: next((r.get("psnr_mean") for r in ms.values()
                        if r.get("method_type") == t and r.get("status") == "ok"), None) for t in ("cubic", "nearest")}
        for name in s.get("method_order") or list(ms):
            r = ms[name]
            row = {"dataset": s["dataset"], "fraction": s["fraction"],
                   "input_set": input_set(s["fraction"], s["n_train"], s["depth"]),
                   "method": name, "method_type": r.get("method_type"), "display_name": r.get("display_name") or name,
                   "family": r.get("family"), "status": r.get("status"), "error": r.get("error") or "",
                   "n_train": s["n_train"], "n_test": s["n_test"], "fit_psnr": r.get("fit_psnr"),
                   "fit_seconds": r.get("fit_seconds"), "fit_cpu_seconds": r.get("fit_cpu_seconds"),
                   "params": json.dumps(r.get("params") or {}, sort_keys=True),
                   "versions": json.dumps(r.get("versions") or {}, sort_keys=True), "source": "volbench"}
            for m in METRICS:
                row[f"{m}_mean"], row[f"{m}_std"] = r.get(f"{m}_mean"), r.get(f"{m}_std")
            for t in ("cubic", "nearest"):
                p, q = _num(row["psnr_mean"]), _num(ref[t])
                row[f"psnr_minus_{t}"] = p - q if p is not None and q is not None else None
            out.append(row)
    return out


def _cells(row: dict) -> list[str]:
    name = row["display_name"]
    if row.get("status") == "published":
        return [f"*{name}, published*",
                *(mean_std(row.get(f"{m}_mean"), row.get(f"{m}_std"), DIGITS[m]) for m in METRICS), "", "", ""]
    if row.get("status") != "ok":
        return [name, f"failed: {row.get('error') or 'no reason recorded'}", "", "", "", "", ""]
    diff = _num(row.get("psnr_minus_cubic"))
    fit = _num(row.get("fit_psnr"))
    secs = _num(row.get("fit_seconds"))
    return [name, *(mean_std(row.get(f"{m}_mean"), row.get(f"{m}_std"), DIGITS[m]) for m in METRICS),
            "" if diff is None or row.get("method_type") == "cubic" else f"{diff:+.2f}",
            "exact" if row.get("fit_psnr") is None else ("—" if fit is None else f"{fit:.2f}"),
            "" if secs is None else f"{secs:.1f}"]


def blocks(rows: list[dict], published: list[dict]) -> list[tuple[str, list[list[str]]]]:
    """(dataset heading, table rows) per dataset: each fraction's methods, then the published rows
    of that fraction."""
    out = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        body = []
        mine = [r for r in rows if r["dataset"] == ds]
        for frac in dict.fromkeys(r["fraction"] for r in mine):
            group = [r for r in mine if r["fraction"] == frac]
            group += [p for p in published if math.isclose(p["fraction"], frac, abs_tol=1e-9)]
            for i, r in enumerate(group):
                body.append([r["input_set"] if i == 0 else "", *_cells(r)])
        out.append((ds, body))
    return out


TITLE = "Sparse-slice reconstruction: held-out axial slices (seed 004 Table 1 layout)"
NOTE = ("Mean ± std (population) over the held-out slices of each split. PSNR − cubic: the held-out PSNR minus "
        "cubic interpolation's on the same split. fit PSNR: the method's reconstruction of its own training "
        "slices (exact for the interpolations). Published rows: seed 004 Table 1 (INTERGROWTH-21st fetal-brain "
        "ultrasound, 160³, another volume than ours: for orientation only).")


def render_markdown(title: str, note: str, header: list[str], body_blocks, empty: str = "") -> str:
    """A titled Markdown document: the note, then one table per (heading, rows) block (`empty`
    stands in for a document without blocks)."""
    lines = [f"# {title}", "", note, ""]
    if empty and not body_blocks:
        lines += [empty, ""]
    for ds, body in body_blocks:
        lines += [f"## {ds}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in body]
        lines.append("")
    return "\n".join(lines)


def render_html(title: str, note: str, header: list[str], body_blocks, page_title: str) -> str:
    """The same as a standalone HTML page; a cell written *like this* is set in italics."""
    e = html.escape
    parts = [f"<h2>{e(title)}</h2>", f"<p>{e(note)}</p>"]
    for ds, body in body_blocks:
        parts.append(f"<h3>{e(ds)}</h3>")
        parts.append("<table border='1' cellspacing='0' cellpadding='3'><thead><tr>"
                     + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead><tbody>")
        for r in body:
            cells = []
            for c in r:
                if c.startswith("*") and c.endswith("*"):
                    cells.append(f"<td><i>{e(c.strip('*'))}</i></td>")
                else:
                    cells.append(f"<td>{e(c)}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table>")
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(page_title)}</title></head><body>\n" \
        + "\n".join(parts) + "\n</body></html>\n"


def markdown(rows, published) -> str:
    return render_markdown(TITLE, NOTE, HEADER, blocks(rows, published))


def to_html(rows, published) -> str:
    return render_html(TITLE, NOTE, HEADER, blocks(rows, published), "sparse slices")


def write_table(score_files, out_base, published_path=None) -> list[dict[str, Any]]:
    """Write out_base.csv / .md / .html; returns the CSV rows."""
    rows = rows_from_scores(score_files)
    pub = published_rows(published_path)
    csv_rows = rows + [{**p, "n_train": "", "n_test": ""} for p in pub]
    base = Path(out_base)
    io.write_csv(f"{base}.csv", csv_rows, CSV_COLUMNS)
    io.atomic_write_text(f"{base}.md", markdown(rows, pub))
    io.atomic_write_text(f"{base}.html", to_html(rows, pub))
    return csv_rows
