"""BD-rate and BD-PSNR of every codec against an anchor codec, per dataset.

Method (stated in every output): the ``bjontegaard`` package, piecewise cubic Hermite
interpolation (``pchip``, the JCT-VC/JVET common-test-conditions choice), rate = bits per voxel
(log10 inside the package), quality = PSNR in dB (2D slice-averaged and 3D volume). BD-rate is the
average rate difference at equal quality over the overlapping PSNR interval (negative = the test
codec needs fewer bits); BD-PSNR the average PSNR difference at equal rate over the overlapping
log-rate interval.

A number is only given where both curves have at least ``min_points`` distinct finite points
(lossless points with infinite PSNR are left out) and their overlap along the integration axis is
at least ``min_overlap`` of the union of the two intervals (the package's own definition and its
default 0.75); otherwise the table says why instead of giving a number.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd

from ..errors import VolbenchError
from ..io import atomic_write_text
from .formatting import MISSING, Col, Row, Table, to_html, to_latex, to_markdown
from .selection import Context, ablation_mask, display_names, instance_label, instance_labels, lossless_intent, ok_rows

DEFAULT_METHOD = "pchip"
DEFAULT_MIN_POINTS = 4
DEFAULT_MIN_OVERLAP = 0.75
METRICS = ("psnr_2d", "psnr_3d")


def _bd():
    try:
        import bjontegaard
    except ImportError:
        raise VolbenchError("BD-rate needs the bjontegaard package: pip install bjontegaard "
                            "(it is in requirements.txt)") from None
    return bjontegaard


def _clean(rate, psnr, sort_by: str) -> tuple[np.ndarray, np.ndarray]:
    """Finite points with rate > 0, sorted by the integration axis, duplicates of it dropped."""
    r = np.asarray(rate, dtype=float)
    p = np.asarray(psnr, dtype=float)
    ok = np.isfinite(r) & np.isfinite(p) & (r > 0)
    r, p = r[ok], p[ok]
    key = r if sort_by == "rate" else p
    order = np.argsort(key, kind="stable")
    r, p, key = r[order], p[order], key[order]
    keep = np.concatenate([[True], np.diff(key) > 0]) if key.size else np.zeros(0, bool)
    return r[keep], p[keep]


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Overlap of the ranges of a and b as a fraction of their union (0 when disjoint)."""
    if a.size == 0 or b.size == 0:
        return 0.0
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    span = max(a.max(), b.max()) - min(a.min(), b.min())
    if span <= 0:
        return 0.0
    return max(hi - lo, 0.0) / span


def bd_pair(rate_anchor, psnr_anchor, rate_test, psnr_test, method: str = DEFAULT_METHOD,
            min_points: int = DEFAULT_MIN_POINTS, min_overlap: float = DEFAULT_MIN_OVERLAP) -> dict[str, Any]:
    """BD-rate (%) and BD-PSNR (dB) of test against anchor, or the reason each is not given.

    Returns {"bd_rate", "bd_psnr" (float or None), "rate_note", "psnr_note" (str, "" when a number
    was computed), "overlap_psnr", "overlap_rate", "n_anchor", "n_test"}.
    """
    bd = _bd()
    out: dict[str, Any] = {"bd_rate": None, "bd_psnr": None, "rate_note": "", "psnr_note": ""}
    # BD-rate integrates over PSNR; BD-PSNR over log10(rate)
    ra_q, pa_q = _clean(rate_anchor, psnr_anchor, "psnr")
    rt_q, pt_q = _clean(rate_test, psnr_test, "psnr")
    ra_r, pa_r = _clean(rate_anchor, psnr_anchor, "rate")
    rt_r, pt_r = _clean(rate_test, psnr_test, "rate")
    out["n_anchor"] = int(min(ra_q.size, ra_r.size))
    out["n_test"] = int(min(rt_q.size, rt_r.size))
    out["overlap_psnr"] = overlap(pa_q, pt_q)
    out["overlap_rate"] = overlap(np.log10(ra_r) if ra_r.size else ra_r, np.log10(rt_r) if rt_r.size else rt_r)

    def too_few(na, nt):
        if na < min_points or nt < min_points:
            return f"too few points (anchor {na}, test {nt}; need {min_points})"
        return ""

    note = too_few(ra_q.size, rt_q.size)
    if not note and out["overlap_psnr"] < min_overlap:
        note = f"PSNR ranges overlap {out['overlap_psnr']:.0%} < {min_overlap:.0%}"
    if note:
        out["rate_note"] = note
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            v = bd.bd_rate(ra_q, pa_q, rt_q, pt_q, method=method, require_matching_points=False, min_overlap=0)
        out["bd_rate"] = float(v) if math.isfinite(v) else None
        out["rate_note"] = "" if out["bd_rate"] is not None else "not computable"
    note = too_few(ra_r.size, rt_r.size)
    if not note and out["overlap_rate"] < min_overlap:
        note = f"rate ranges overlap {out['overlap_rate']:.0%} < {min_overlap:.0%}"
    if note:
        out["psnr_note"] = note
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            v = bd.bd_psnr(ra_r, pa_r, rt_r, pt_r, method=method, require_matching_points=False, min_overlap=0)
        out["bd_psnr"] = float(v) if math.isfinite(v) else None
        out["psnr_note"] = "" if out["bd_psnr"] is not None else "not computable"
    return out


def bd_frame(df_all: pd.DataFrame, anchor: str = "hevc", metrics=METRICS, method: str = DEFAULT_METHOD,
             min_points: int = DEFAULT_MIN_POINTS, min_overlap: float = DEFAULT_MIN_OVERLAP,
             ctx: Context | None = None, include_ablations: bool = False) -> pd.DataFrame:
    """Long table: one row per dataset x codec x metric (the anchor itself left out)."""
    ctx = ctx or Context()
    df = ok_rows(df_all)
    if not include_ablations:
        df = df[~ablation_mask(df)]
    recs = []
    for ds in ctx.dataset_order(df):
        sub = df[df["dataset"] == ds]
        anc = sub[sub["codec"] == anchor]
        for codec in ctx.codec_order(sub):
            if codec == anchor:
                continue
            test = sub[sub["codec"] == codec]
            for m in metrics:
                rec = {"dataset": ds, "codec": codec, "codec_type": test["codec_type"].iloc[0], "anchor": anchor,
                       "metric": m, "method": method, "rate": "bpv"}
                if anc.empty:
                    rec.update({"bd_rate_pct": None, "bd_psnr_db": None, "n_anchor": 0, "n_test": len(test),
                                "rate_note": f"anchor {anchor} has no results on {ds}",
                                "psnr_note": f"anchor {anchor} has no results on {ds}"})
                else:
                    q = pd.to_numeric(test[m], errors="coerce").to_numpy(dtype=float)
                    rec["lossless"] = bool(q.size) and bool(np.isinf(q).any()) and not np.isfinite(q).any()
                    r = bd_pair(anc["bpv"], anc[m], test["bpv"], test[m], method, min_points, min_overlap)
                    rec.update({"bd_rate_pct": r["bd_rate"], "bd_psnr_db": r["bd_psnr"], "n_anchor": r["n_anchor"],
                                "n_test": r["n_test"], "overlap_psnr": r["overlap_psnr"],
                                "overlap_rate": r["overlap_rate"], "rate_note": r["rate_note"],
                                "psnr_note": r["psnr_note"]})
                recs.append(rec)
    cols = ["dataset", "codec", "codec_type", "anchor", "metric", "method", "rate", "n_anchor", "n_test",
            "overlap_psnr", "overlap_rate", "bd_rate_pct", "bd_psnr_db", "rate_note", "psnr_note", "lossless"]
    return pd.DataFrame(recs, columns=cols)


def _reason_key(note: str) -> str:
    """The footnote of a reason why a BD number is not given (bd_pair's notes)."""
    for prefix, key in (("too few points", "few"), ("PSNR ranges overlap", "overlap_psnr"),
                        ("rate ranges overlap", "overlap_rate")):
        if note.startswith(prefix):
            return key
    return "other:" + note


def bd_table(frame: pd.DataFrame, anchor: str, method: str = DEFAULT_METHOD, min_points: int = DEFAULT_MIN_POINTS,
             min_overlap: float = DEFAULT_MIN_OVERLAP, metrics=METRICS, names: dict[str, str] | None = None,
             labels: dict[tuple[str, str], str] | None = None, unranked: set[str] | None = None) -> Table:
    """The BD table of bd_frame's output. `names`: the codec instances' display names
    (display_names); `labels`: {(dataset, codec): row label} where known (the naming scheme of
    selection.instance_labels); `unranked`: instances never marked best (lossless modes).
    A number that cannot be given is a dash with a footnote marker saying why (the counts and
    overlaps are in bdrate.csv)."""
    label = {"psnr_2d": "2D", "psnr_3d": "3D"}
    names = names or {}
    labels = labels or {}
    cols = []
    for m in metrics:
        cols.append(Col(f"rate|{m}", "BD-rate (%)", label.get(m, m), "min", "pct"))
        cols.append(Col(f"psnr|{m}", "BD-PSNR (dB)", label.get(m, m), "max", "db"))
    footnotes = {
        "few": f"fewer than {min_points} distinct finite rate points on one of the two curves",
        "overlap_psnr": f"the PSNR ranges of the two curves overlap less than {min_overlap:.0%} (BD-rate integrates "
                        "over PSNR)",
        "overlap_rate": f"the rate ranges of the two curves overlap less than {min_overlap:.0%} (BD-PSNR integrates "
                        "over log rate)",
        "nc": "not computable (the interpolation gave no finite number)",
    }
    rows = []
    lossless: dict[str, list[str]] = {}
    for (ds, codec), g in frame.groupby(["dataset", "codec"], sort=False):
        ctype = g["codec_type"].iloc[0]
        name = labels.get((str(ds), str(codec))) or instance_label(str(codec), ctype, names.get(codec, ctype))
        if g["rate_note"].astype(str).str.startswith(f"anchor {anchor} has no results").all():
            continue  # the dataset has no anchor curve: one note below instead of a row of reasons
        if "lossless" in g.columns and g["lossless"].fillna(False).astype(bool).all():
            lossless.setdefault(name, []).append(str(ds))  # no finite PSNR: no curve to compare
            continue
        vals: dict[str, Any] = {}
        tags: dict[str, list[str]] = {}
        for _, r in g.iterrows():
            m = r["metric"]
            for kind, v, note in (("rate", r["bd_rate_pct"], r["rate_note"]), ("psnr", r["bd_psnr_db"], r["psnr_note"])):
                key = f"{kind}|{m}"
                if pd.notna(v):
                    vals[key] = v
                    continue
                vals[key] = MISSING
                fk = _reason_key(str(note or "")) if note else "nc"
                if fk.startswith("other:"):
                    footnotes.setdefault(fk, fk[len("other:"):])
                tags[key] = [fk]
        rows.append(Row(name, vals, ds, meta={"dataset": ds, "codec": codec}, cell_tags=tags,
                        ranked=str(codec) not in (unranked or set())))
    notes = [f"Anchor: {anchor}. Bjøntegaard delta with the bjontegaard package, {method} interpolation, rate = "
             f"bits per voxel, quality = PSNR (2D: slice-averaged, 3D: whole volume). Negative BD-rate / positive "
             f"BD-PSNR = better than the anchor; bold: the best per dataset. A number needs >= {min_points} distinct "
             f"finite points per curve (lossless points left out) and >= {min_overlap:.0%} overlap of the curves' "
             "ranges; a dash's letter says which is missing (the counts and overlaps are in bdrate.csv)."]
    if lossless:  # named with the datasets where they are lossless, unless that is every compared one
        every = {str(d) for d, g in frame.groupby("dataset", sort=False)
                 if not g["rate_note"].astype(str).str.startswith(f"anchor {anchor} has no results").all()}
        parts = [n if set(d) >= every and len(every) > 1 else f"{n} ({', '.join(d)})" for n, d in lossless.items()]
        notes.insert(0, "Not compared (lossless: every point has infinite PSNR, so there is no rate-distortion "
                        f"curve): {'; '.join(parts)}.")
    no_anchor = [str(d) for d, g in frame.groupby("dataset", sort=False)
                 if g["rate_note"].astype(str).str.startswith(f"anchor {anchor} has no results").all()]
    if no_anchor and len(no_anchor) < frame["dataset"].nunique():
        notes.insert(0, f"Skipped (the anchor {anchor} has no results there): {', '.join(no_anchor)}.")
    if frame.empty:
        notes.insert(0, f"No codec to compare: the summary has no codec besides the anchor {anchor} (set `anchor:` "
                        "in the config to a codec instance that exists).")
    return Table("bdrate", f"BD-rate and BD-PSNR against {anchor}", cols, rows, notes, block_header="Dataset",
                 footnotes=footnotes)


def write_bdrate(df: pd.DataFrame, out_dir, anchor: str = "hevc", method: str = DEFAULT_METHOD,
                 min_points: int = DEFAULT_MIN_POINTS, min_overlap: float = DEFAULT_MIN_OVERLAP,
                 ctx: Context | None = None) -> list:
    from pathlib import Path

    frame = bd_frame(df, anchor, METRICS, method, min_points, min_overlap, ctx)
    ok = ok_rows(df)
    labels = {(str(ds), c): lab for ds, g in ok.groupby("dataset", sort=False) for c, lab in instance_labels(g).items()}
    table = bd_table(frame, anchor, method, min_points, min_overlap, names=display_names(df), labels=labels,
                     unranked=lossless_intent(ok))
    if anchor not in set(ok["codec"]):
        others = ", ".join(sorted(set(ok["codec"]) - {anchor})) or "none"
        table.notes.insert(0, f"The anchor {anchor} has no results in this run (not a codec instance of the config, "
                              f"or every cell of it failed): no BD numbers. Set `anchor:` in the config to one of "
                              f"the instances that ran ({others}).")
    out_dir = Path(out_dir)
    paths = []
    for ext, text in (("csv", frame.to_csv(index=False)), ("md", to_markdown(table)), ("tex", to_latex(table)),
                      ("html", to_html(table))):
        p = out_dir / f"bdrate.{ext}"
        atomic_write_text(p, text)
        paths.append(p)
    return paths
