"""Reading the summary and choosing the rows of the paper tables.

The summary (``results/tables/summary.csv``, columns in volbench.summary.COLUMNS) names every
codec the way the codec describes itself (``display_name``, ``family``, ``table_order``,
``trains``: Codec.describe, recorded at encode time): nothing here knows a codec by name.
Ablation instances are codec instances whose name starts with ``ablation_`` (config/ablation.yaml).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

import numpy as np
import pandas as pd

from ..errors import VolbenchError
from ..summary import COLUMNS, NUMERIC
from .formatting import MISSING, Col, Row, Table

#: codec instances whose name starts with this are ablations (config/ablation.yaml)
ABLATION_PREFIX = "ablation_"
#: the matched bitrate when the config gives none (bits per voxel)
DEFAULT_MATCHED_BPP = 0.073


# ----------------------------------------------------------------------------------------------
# reading the summary
def load_summary(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise VolbenchError(f"summary {path} does not exist; run the pipeline's summary step first")
    try:
        df = pd.read_csv(path, keep_default_na=True)
    except Exception as exc:  # pandas raises several kinds
        raise VolbenchError(f"summary {path} is not a readable CSV ({exc}); rebuild it with the summary step")
    missing = [c for c in ("dataset", "codec") if c not in df.columns]
    if missing:
        raise VolbenchError(f"summary {path} lacks column(s) {missing}; it is not a volbench summary.csv")
    return prepare(df)


def _parse_params(v: Any) -> dict[str, Any]:
    if isinstance(v, dict):
        return v
    if isinstance(v, str) and v.strip():
        try:
            out = json.loads(v)
            return out if isinstance(out, dict) else {}
        except json.JSONDecodeError:
            return {}
    return {}


def _to_bool(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return False
    return bool(v)


def _given(v: Any) -> bool:
    return not (v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip()))


def _per_instance(df: pd.DataFrame, col: str, fallback: list[Any]) -> list[Any]:
    """The column's first given value of each codec instance on all its rows, else `fallback`."""
    first: dict[str, Any] = {}
    for c, v in zip(df["codec"], df[col]):
        if c not in first and _given(v):
            first[c] = v
    return [first.get(c, fb) for c, fb in zip(df["codec"], fallback)]


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Normalise a summary frame: every column present, numbers numeric, params parsed, and the
    codec's presentation on every row of an instance (a summary without it, written before the
    codecs described themselves: the codec type as its name, family "other", last in order)."""
    df = df.copy()
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = np.nan
    for c in NUMERIC:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    for c in ("dataset", "codec", "point"):
        df[c] = df[c].astype(str)
    df["codec_type"] = [
        (str(t) if isinstance(t, str) and t else str(c)) for t, c in zip(df["codec_type"], df["codec"])
    ]
    n = len(df)
    df["display_name"] = [str(v) for v in _per_instance(df, "display_name", list(df["codec_type"]))]
    df["family"] = [str(v) for v in _per_instance(df, "family", ["other"] * n)]
    df["table_order"] = [float(v) for v in _per_instance(df, "table_order", [math.inf] * n)]
    df["trains"] = [_to_bool(v) for v in _per_instance(df, "trains", [False] * n)]
    df["status"] = df["status"].fillna("ok").astype(str)
    df["lossless"] = [_to_bool(v) for v in df["lossless"]]
    # missed its rate target (a column of newer summaries; absent or empty: no)
    df["target_missed"] = [_to_bool(v) for v in df["target_missed"]] if "target_missed" in df.columns else False
    df["_params"] = [_parse_params(v) for v in df["params"]]
    df["size_mb"] = df["bytes"] / 1e6
    return df.reset_index(drop=True)


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"].str.lower() == "ok"]


def is_ablation(codec: str) -> bool:
    return str(codec).startswith(ABLATION_PREFIX)


def ablation_mask(df: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the ablation rows (a numpy bool array, also right on an empty frame)."""
    return np.array([is_ablation(c) for c in df["codec"]], dtype=bool)


def display_names(df: pd.DataFrame) -> dict[str, str]:
    """{codec instance: its codec's display name} of a prepared summary."""
    return dict(zip(df["codec"], df["display_name"]))


# ----------------------------------------------------------------------------------------------
# one naming scheme for every table, legend and panel title: the method's name as its paper writes
# it (the codec's display name, e.g. "COIN (SIREN)"), then, separated by commas, the instance's
# variant where the codec type has several instances, and the rate point where the instance has
# several: "HEVC (x265), crf 22", "HEVC (x265), lossless", "GaussianPile, noquant, ratio 18"
#: what a lossless-mode instance is called by what it achieved (lossless_status)
LOSSLESS, NEAR_LOSSLESS, LOSSLESS_MODE = "lossless", "near-lossless", "lossless mode"


def variant_text(codec: str, codec_type: str) -> str:
    """The instance part of a label: the instance name without its codec type's prefix, words
    separated by spaces (hevc_lossless -> lossless, gaussianpile_noquant -> noquant)."""
    v = codec[len(codec_type) + 1:] if codec.startswith(codec_type + "_") else codec
    return v.replace("_", " ").strip() or codec


def point_text(point: str) -> str:
    """A rate point label (config.point_label) as a reader says it: crf-22 -> crf 22,
    target_bpp-0.073 -> 0.073 bpv, target_ratio-18 -> ratio 18, mode-reversible -> reversible;
    a `label:` stays as it is (own, lossless)."""
    pairs = re.findall(r"([A-Za-z][A-Za-z0-9]*(?:_[A-Za-z][A-Za-z0-9]*)*)-([^_]+)(?:_|$)", point)
    if not pairs or "_".join(f"{k}-{v}" for k, v in pairs) != point:
        return point
    out = []
    for k, v in pairs:
        if k == "target_bpp":
            out.append(f"{v} bpv")
        elif k == "target_ratio":
            out.append(f"ratio {v}")
        elif k in ("mode", "label"):
            out.append(v)
        else:
            out.append(f"{k.replace('_', ' ')} {v}")
    return ", ".join(out)


def instance_label(codec: str, codec_type: str, name: str, variant: str | None = None) -> str:
    """The display name, and the instance's variant after a comma when the instance is not the
    codec type itself (`variant` replaces the one its name gives, e.g. lossless_status's)."""
    return name if codec == codec_type else f"{name}, {variant or variant_text(codec, codec_type)}"


def lossless_intent(df: pd.DataFrame) -> set[str]:
    """The codec instances run in a lossless mode: another instance of a codec type (not the type
    itself: zstd's own name says what it is) with a lossless cell on some dataset, or with the
    parameter ``lossless: true``. On other data such an instance may be near-lossless only
    (x265's lossless mode on 16-bit data goes through a 12-bit map)."""
    out = set()
    if df is None or not len(df):
        return out
    params = df["_params"] if "_params" in df.columns else [{}] * len(df)
    for c, t, ll, p in zip(df["codec"], df["codec_type"], df["lossless"], params):
        if str(c) != str(t) and (_to_bool(ll) or _to_bool((p or {}).get("lossless"))):
            out.add(str(c))
    return out


def lossless_status(df: pd.DataFrame, codec: str) -> str:
    """LOSSLESS, NEAR_LOSSLESS or LOSSLESS_MODE (some datasets each) of a lossless-mode instance
    over the ok rows of `df`."""
    sub = df[(df["codec"] == codec) & (df["status"].str.lower() == "ok")]
    flags = [_to_bool(v) for v in sub["lossless"]]
    if flags and all(flags):
        return LOSSLESS
    if not any(flags):
        return NEAR_LOSSLESS
    return LOSSLESS_MODE


def instance_labels(df: pd.DataFrame) -> dict[str, str]:
    """{codec instance: label} of a prepared summary (or the part of it a table or figure shows):
    a lossless-mode instance is named by what it achieved there (lossless_status)."""
    out: dict[str, str] = {}
    intent = lossless_intent(df)
    for c, t, n in zip(df["codec"], df["codec_type"], df["display_name"]):
        c = str(c)
        if c not in out:
            out[c] = instance_label(c, str(t), str(n), lossless_status(df, c) if c in intent else None)
    return out


def target_missed(r: pd.Series | dict) -> bool:
    """Whether a summary row missed its rate target (the ``target_missed`` column; absent or
    empty: no)."""
    return _to_bool(r.get("target_missed")) if hasattr(r, "get") else False


# ----------------------------------------------------------------------------------------------
# what the tables know besides the summary
@dataclass
class Context:
    config: dict[str, Any] = field(default_factory=dict)
    matched_bpp: list[float] = field(default_factory=lambda: [DEFAULT_MATCHED_BPP])

    @classmethod
    def from_config(cls, config: dict[str, Any] | None, matched_bpp: list[float] | None = None) -> "Context":
        config = config or {}
        mb = matched_bpp or config.get("matched_bpp") or [DEFAULT_MATCHED_BPP]
        if not isinstance(mb, (list, tuple)):
            mb = [mb]
        return cls(config=config, matched_bpp=[float(x) for x in mb])

    def codec_order(self, df: pd.DataFrame) -> list[str]:
        """Codec instances in config order, else by the codecs' table_order."""
        names = list(dict.fromkeys(df["codec"]))
        cfg = list((self.config.get("codecs") or {}).keys())
        if cfg:
            return [c for c in cfg if c in names] + [c for c in names if c not in cfg]
        order = dict(zip(df["codec"], df["table_order"])) if "table_order" in df.columns else {}
        return sorted(names, key=lambda c: (order.get(c, math.inf), names.index(c)))

    def point_order(self, codec: str) -> list[str]:
        """The rate point labels of a codec instance in config order (empty when unknown)."""
        from ..config import point_label

        entry = (self.config.get("codecs") or {}).get(codec) or {}
        out = []
        for rp in entry.get("rate_points") or []:
            try:
                out.append(point_label(dict(rp)))
            except Exception:
                continue
        return out

    def dataset_order(self, df: pd.DataFrame) -> list[str]:
        names = list(dict.fromkeys(df["dataset"]))
        cfg = list((self.config.get("datasets") or {}).keys())
        return [d for d in cfg if d in names] + [d for d in names if d not in cfg]

    def dz(self, dataset: str) -> float:
        """The scan-axis spacing of a dataset (config spacing[0], default 1)."""
        d = (self.config.get("datasets") or {}).get(dataset) or {}
        sp = d.get("spacing") or [1.0, 1.0, 1.0]
        return float(sp[0])

    def sigma_z(self, dataset: str) -> float:
        """The dataset's sigma_z (config), else dz: what a codec without its own sigma_z uses."""
        d = (self.config.get("datasets") or {}).get(dataset) or {}
        return float(d["sigma_z"]) if d.get("sigma_z") is not None else self.dz(dataset)

    def modality(self, dataset: str) -> str:
        d = (self.config.get("datasets") or {}).get(dataset) or {}
        return str(d.get("modality", "other"))

    def datasets_by_modality(self, df: pd.DataFrame, em: bool) -> list[str]:
        """The datasets (in order) whose modality is em (em=True) or not."""
        return [d for d in self.dataset_order(df) if (self.modality(d) == "em") == em]


# ----------------------------------------------------------------------------------------------
# the rows of a table
class Method(NamedTuple):
    codec: str
    codec_type: str
    name: str  # the codec's display name
    point: str


def point_rates(df: pd.DataFrame) -> dict[tuple[str, str], float]:
    """{(codec, point): median bpv over the datasets of `df`} (inf where unknown)."""
    out: dict[tuple[str, str], float] = {}
    if not len(df):
        return out
    b = pd.to_numeric(df["bpv"], errors="coerce")
    for (c, p), g in b.groupby([df["codec"], df["point"]], sort=False):
        g = g[np.isfinite(g)]
        out[(str(c), str(p))] = float(g.median()) if len(g) else math.inf
    return out


def method_rows(df: pd.DataFrame, ctx: Context) -> list[Method]:
    """One entry per codec instance x rate point of the main (non-ablation) instances: instances in
    config order, the points of an instance by rate (median bpv over the datasets, low to high;
    ties and unknown rates in config order)."""
    main = df[~ablation_mask(df)]
    rates = point_rates(main)
    out = []
    for codec in ctx.codec_order(main):
        sub = main[main["codec"] == codec]
        cfg_points = ctx.point_order(codec)
        points = list(dict.fromkeys(sub["point"]))
        points = [p for p in cfg_points if p in points] + [p for p in points if p not in cfg_points]
        points.sort(key=lambda p: rates.get((codec, p), math.inf))  # stable: config order breaks ties
        first = sub.iloc[0]
        out += [Method(codec, first["codec_type"], first["display_name"], p) for p in points]
    return out


def method_labels(methods: list[Method], df: pd.DataFrame | None = None) -> dict[tuple[str, str], str]:
    """{(codec, point): row label} (the naming scheme above): the display name, the instance's
    variant when a codec type has several instances, the rate point when an instance has several.
    `df`: the rows the table shows (a lossless-mode instance is named by what it achieved there)."""
    per_type: dict[str, set[str]] = {}
    per_codec: dict[str, set[str]] = {}
    for m in methods:
        per_type.setdefault(m.codec_type, set()).add(m.codec)
        per_codec.setdefault(m.codec, set()).add(m.point)
    names = instance_labels(df) if df is not None and len(df) else {}
    intent = lossless_intent(df) if df is not None else set()
    out = {}
    for m in methods:
        label = names.get(m.codec) or instance_label(m.codec, m.codec_type, m.name)
        if len(per_type[m.codec_type]) == 1 and m.codec not in intent:
            label = m.name
        out[(m.codec, m.point)] = label + (f", {point_text(m.point)}" if len(per_codec[m.codec]) > 1 else "")
    return out


def cell(df: pd.DataFrame, dataset: str, codec: str, point: str) -> pd.Series | None:
    sub = df[(df["dataset"] == dataset) & (df["codec"] == codec) & (df["point"] == point)]
    return None if sub.empty else sub.iloc[0]


def metric(r: pd.Series, m: str) -> Any:
    """A table value of a summary row: a summary column, or decode_ms / encode_minutes."""
    if m == "decode_ms":
        return r["decode_seconds"] * 1000.0
    if m == "encode_minutes":
        return r["encode_seconds"] / 60.0
    return r.get(m)


def matched_rows(df: pd.DataFrame, bpp: float) -> pd.DataFrame:
    t = df["target_bpp"]
    return df[t.notna() & (np.abs(t - bpp) <= 1e-6 * max(abs(bpp), 1e-12) + 1e-12)]


def failed_note(df: pd.DataFrame, datasets: Iterable[str]) -> list[str]:
    bad = df[(df["status"].str.lower() != "ok") & df["dataset"].isin(list(datasets))]
    if bad.empty:
        return []
    cells = ", ".join(f"{r.dataset}/{r.codec}/{r.point}" for r in bad.itertuples())
    return [f"Left out (failed in the pipeline, see summary.csv 'error'): {cells}."]


def missing_instances(ctx: Context, present: set[str], names: dict[str, str]) -> list[tuple[str, str]]:
    """(codec, label) of the configured main instances without any row in a table; `names`:
    display names of the summary's instances (display_names)."""
    out = []
    for codec, entry in (ctx.config.get("codecs") or {}).items():
        if is_ablation(codec) or codec in present:
            continue
        ctype = str((entry or {}).get("codec", codec))
        out.append((codec, instance_label(codec, ctype, names.get(codec, ctype))))
    return out


def missing_note(missing: list[tuple[str, str]]) -> list[str]:
    if not missing:
        return []
    return [f"{MISSING} = no result: configured codec instance(s) {', '.join(c for c, _ in missing)} have no "
            "successful cell here (not run yet, or failed: see summary.csv 'error')."]


Extra = Callable[[pd.DataFrame], list[tuple[str, str, str]]]


#: the footnotes of the tables (Table.footnotes), marked where they apply (flag_row)
FOOTNOTES = {
    "near_lossless": "near-lossless here: the lossless mode is not bit-exact on this dataset (finite PSNR)",
    "target_missed": "rate target missed: the rate control ended outside its tolerance of the target",
}
#: the note of every table that marks a best value
RANKED_NOTE = "Bold: the best value of a column among the lossy rows (lossless and lossless-mode rows are " \
              "not ranked); a timing is bold only when no other one lies within its measurement noise."


def flag_row(row: Row, cells: dict[str, pd.Series | None], intent: set[str],
             first_col: dict[str, str] | None = None) -> Row:
    """Mark a table row built from summary rows (`cells`: {dataset: row}): not ranked when it is
    lossless or a lossless mode (`intent`, lossless_intent); footnote tags where the lossless mode
    is only near-lossless (when its label does not already say so) and where the rate target was
    missed: after the label, or, in a table whose columns are datasets (`first_col`: {dataset:
    the key of its first column}), after that dataset's first value."""
    codec = str(row.meta.get("codec", ""))
    present = [r for r in cells.values() if r is not None]
    if codec in intent or any(_to_bool(r["lossless"]) for r in present):
        row.ranked = False
    mixed = codec in intent and len({_to_bool(r["lossless"]) for r in present}) == 2  # labelled LOSSLESS_MODE
    for ds, r in cells.items():
        if r is None:
            continue
        tags = (["near_lossless"] if mixed and not _to_bool(r["lossless"]) else []) + \
               (["target_missed"] if target_missed(r) else [])
        if first_col is None:
            row.tags += [t for t in tags if t not in row.tags]
        elif tags:
            row.cell_tags.setdefault(first_col[ds], []).extend(tags)
    return row


def wide_table(name: str, title: str, df_all: pd.DataFrame, ctx: Context, datasets: list[str],
               metrics: list[tuple[str, str, str, str]], empty_note: str, extra: Extra | None = None) -> Table:
    """Rows = methods, column groups = datasets, sub-columns = metrics (the GaussianPile layout).

    metrics: (summary column, label, better, kind). extra(df) gives more (codec, point, label)
    rows, e.g. ablation rows that belong in this table.
    """
    df = ok_rows(df_all)
    df = df[df["dataset"].isin(datasets)]
    cols = [Col(f"{ds}|{m}", label, ds, better, kind, unit="MB" if kind == "mb" else "")
            for ds in datasets for m, label, better, kind in metrics]
    first = {ds: f"{ds}|{metrics[0][0]}" for ds in datasets}
    methods = method_rows(df, ctx)
    labels = method_labels(methods, df)
    intent = lossless_intent(df)
    entries = [(m.codec, m.point, labels[(m.codec, m.point)]) for m in methods]
    if extra is not None:
        entries += extra(df)
    rows = []
    for codec, point, label in entries:
        vals = {}
        found = {}
        for ds in datasets:
            r = found[ds] = cell(df, ds, codec, point)
            for m, *_ in metrics:
                vals[f"{ds}|{m}"] = None if r is None else metric(r, m)
        if any(v is not None and not (isinstance(v, float) and math.isnan(v)) for v in vals.values()):
            rows.append(flag_row(Row(label, vals, meta={"codec": codec, "point": point}), found, intent, first))
    notes = [] if rows else [empty_note]
    if rows:
        missing = missing_instances(ctx, {r.meta["codec"] for r in rows}, display_names(df_all))
        rows += [Row(lab, {c.key: None for c in cols}, meta={"codec": codec, "point": ""}) for codec, lab in missing]
        notes += missing_note(missing)
        if any(c.better for c in cols):
            notes.append(RANKED_NOTE)
    return Table(name, title, cols, rows, notes + failed_note(df_all, datasets), footnotes=dict(FOOTNOTES))
