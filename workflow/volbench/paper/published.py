"""The seeds' published numbers (``published.csv`` beside this module) and their place in the tables.

``published.csv`` holds every number of the papers' tables that volbench regenerates, one value a
row, read from the plain-text seeds in ``shared/seeds`` (000 GaussianPile: Tables 1-5; 001 VolMicro
paper: Tables 2, 3, 5, 8; 004 tri-plane Gaussians: Tables 1-3, mean and std as separate metrics)
and the headline figures (``table = headline``: 000, 001, 002 and 003's wording, quoted in
``note``). Columns:

* ``paper``: the seed id (``000`` ... ``004``); ``table``: ``Table N`` or ``headline``;
* ``method`` and ``dataset``: as the paper names them (``Ours`` where the table says so;
  ``dataset`` empty where the source names none);
* ``setting``: what else tells the row apart (a rate ``0.073 bpp``, ``iter=10k``, ``CRF 16``, an
  ablation variant as printed, a slice fraction, an axis); empty if nothing;
* ``metric``: volbench's name where one fits (``psnr_2d``, ``ssim_2d``, ``psnr_3d``, ``ssim_3d``,
  ``lpips``, ``compression_ratio``, ``size_mb``, ``bpv``, ``encode_seconds``, ``encode_minutes``,
  ``decode_ms``, ``decode_mvox_s``, ``n_gaussians``, ``speedup``), else a free name (``psnr``,
  ``ssim``, ``semantic_loss``, ``*_std``, ``*_delta``, ``decode_speedup``). VolMicro's PSNR/SSIM are
  ``psnr_2d``/``ssim_2d``: the slice-averaged metrics its tables use (volmicro_tables);
* ``value``: the number as printed (``19,424`` without the comma; durations such as ``1h24m`` in
  seconds, counts such as ``215k`` in full, the printed form then in ``note``); ``unit``: ``dB``,
  ``x``, ``MB``, ``bpv``, ``s``, ``min``, ``ms``, ``MVox/s``, ``count``, or ``1`` (dimensionless);
* ``note``: the printed form where the value was converted, and every reading that the text
  layout left open (the Tribolium column of GaussianPile Tables 1/3, the unlabelled 2D/3D of its
  Table 4, the ZFP row that seed 002 prints differently, seed 004's Table 3 dataset and its Axial
  row identical to Table 2's ...).

:func:`attach` (called by ``tables.build``) gives every generated table (a) the published value in
parentheses beside ours where the method, the dataset and the setting correspond (:data:`METHODS`,
:data:`DATASETS`) and (b) a "published" :class:`~.formatting.Section` under the table listing all
published values of the paper table it regenerates (:data:`TABLE_SOURCES`), each with its source
("seed 000 Table 1"). volbench's default datasets are synthetic: then (b) is all there is.
"""

from __future__ import annotations

import csv
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import pandas as pd

from .formatting import Col, Section, Table, fmt_value, num

#: the CSV of the published values (see the module docstring)
CSV_PATH = Path(__file__).with_name("published.csv")
COLUMNS = ("paper", "table", "method", "dataset", "setting", "metric", "value", "unit", "note")
#: the columns that are never empty
REQUIRED = ("paper", "table", "method", "metric", "value", "unit")

#: volbench table -> the (seed, table) it regenerates
TABLE_SOURCES: dict[str, list[tuple[str, str]]] = {
    "gaussianpile_table1": [("000", "Table 1")],
    "gaussianpile_table2": [("000", "Table 2")],
    "gaussianpile_table3": [("000", "Table 3")],
    "gaussianpile_table4": [("000", "Table 4")],
    "gaussianpile_table5": [("000", "Table 5")],
    "volmicro_table2": [("001", "Table 2")],
    "volmicro_table3": [("001", "Table 3")],
    "volmicro_table5": [("001", "Table 5")],
    "volmicro_table8": [("001", "Table 8")],
}

#: volbench codec type -> {seed: the paper's names of the same method}
METHODS: dict[str, dict[str, tuple[str, ...]]] = {
    "gaussianpile": {"000": ("Ours", "GaussianPile")},
    "gs3d_slice": {"000": ("3DGS",)},  # seed 000's slice-adapted 3DGS
    "hevc": {"000": ("HEVC",), "001": ("HEVC (x265)",)},
    "jpeg2000": {"001": ("JPEG2000-3D",)},  # volbench's is slice-wise
    "zfp": {"001": ("ZFP",)},
    "siren": {"001": ("COIN (SIREN)",)},
    "volmicro": {"001": ("VolMicro", "VolMicro (Ours)"), "002": ("VolMicro",), "003": ("VolMicro",)},
}

_NEURON = "BigNeuron gold166 10-2900-control-cell-05"
#: volbench dataset key (config/paper.yaml) -> the papers' names of that dataset. The Tribolium
#: entries also match the single "Tribolium" column of GaussianPile Tables 1 and 3, whose laser
#: power the paper does not state.
DATASETS: dict[str, tuple[str, ...]] = {
    "abus_001": ("ABUS",),
    "tribolium_high": ("Tribolium high", "Tribolium"),
    "tribolium_low": ("Tribolium low", "Tribolium"),
    "tribolium_very_low": ("Tribolium very low", "Tribolium"),
    "hipsc_cell": ("hiPSC",),
    "isbi2012": ("ISBI12",),
    "cremi_a": ("CREMI",),
    "bigneuron_drg": (_NEURON,),
    "hvsmr_001": ("HVSMR-2.0",),
}

#: how a metric is named in the published block
#: volbench columns that measure what a published metric names (seed 001's own protocol,
#: metrics.protocol_001, is how its PSNR / SSIM / LPIPS were measured)
PROTOCOL_ALIASES = {"psnr_001": "psnr_2d", "ssim_001": "ssim_2d", "lpips_vgg_001": "lpips"}
METRIC_LABELS = {
    "psnr_2d": "2D PSNR", "ssim_2d": "2D SSIM", "psnr_3d": "3D PSNR", "ssim_3d": "3D SSIM", "lpips": "LPIPS",
    "compression_ratio": "CR", "size_mb": "Mem.", "bpv": "Rate", "encode_seconds": "Time", "encode_minutes": "Time",
    "decode_ms": "Decode", "decode_mvox_s": "Throughput", "n_gaussians": "Gau.", "speedup": "Speedup",
    "psnr": "PSNR", "ssim": "SSIM", "psnr_2d_delta": "Δ PSNR", "ssim_2d_delta": "Δ SSIM", "lpips_delta": "Δ LPIPS",
    "decode_speedup": "Decode speedup",
}


class Published(NamedTuple):
    paper: str
    table: str
    method: str
    dataset: str
    setting: str
    metric: str
    value: float
    unit: str
    note: str
    printed: str  # the value cell of the CSV, as the paper prints the number

    @property
    def source(self) -> str:
        return f"seed {self.paper} {self.table}"

    def display(self) -> str:
        """The value with its unit, the way the papers print it (durations as 1h24m, counts as 215k)."""
        if self.unit == "s":
            return fmt_value(Col("", "", kind="seconds"), self.value)
        if self.unit == "count":
            return fmt_value(Col("", "", kind="count"), self.value)
        if self.unit == "x":
            return f"{self.printed}×"
        if self.unit == "1":
            return self.printed
        return f"{self.printed} {self.unit}"


def _paper(p: Any) -> str:
    return str(p).strip().zfill(3)


@lru_cache(maxsize=4)
def _load(path: str) -> tuple[Published, ...]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}")
        out = []
        for i, r in enumerate(reader, start=2):
            empty = [c for c in REQUIRED if not (r.get(c) or "").strip()]
            if empty:
                raise ValueError(f"{path}:{i}: empty {empty}")
            out.append(Published(_paper(r["paper"]), r["table"], r["method"], r["dataset"] or "", r["setting"] or "",
                                 r["metric"], float(r["value"]), r["unit"], r["note"] or "", r["value"]))
    return tuple(out)


def load(path: str | Path | None = None) -> list[Published]:
    """Every published value (the CSV's rows, in order)."""
    return list(_load(str(path or CSV_PATH)))


def frame(path: str | Path | None = None) -> pd.DataFrame:
    """The CSV as a DataFrame (``value`` a float, ``printed`` the value as written)."""
    return pd.DataFrame(load(path), columns=list(Published._fields))


def paper_methods(name: str, paper: str) -> tuple[str, ...]:
    """The paper's names of a volbench codec type (empty when the paper has no such method)."""
    return METHODS.get(name, {}).get(_paper(paper), ())


def paper_datasets(name: str) -> tuple[str, ...]:
    """The papers' names of a volbench dataset key (empty for the synthetic and other datasets)."""
    return DATASETS.get(name, ())


def lookup(paper: str, table: str, method: str | None = None, dataset: str | None = None,
           metric: str | None = None, path: str | Path | None = None) -> list[Published]:
    """The published values of one paper table, optionally of one method, dataset and metric.

    method and dataset are the paper's names or volbench's (codec type, dataset key).
    """
    paper = _paper(paper)
    out = []
    for r in load(path):
        if r.paper != paper or r.table != table or (metric is not None and r.metric != metric):
            continue
        if method is not None and r.method != method and r.method not in paper_methods(method, paper):
            continue
        if dataset is not None and r.dataset != dataset and r.dataset not in paper_datasets(dataset):
            continue
        out.append(r)
    return out


def for_table(table: Table | str, path: str | Path | None = None) -> list[Published]:
    """The published values that belong to a generated table (by its name), in CSV order."""
    name = table if isinstance(table, str) else table.name
    return [r for paper, tab in TABLE_SOURCES.get(name, []) for r in lookup(paper, tab, path=path)]


# ----------------------------------------------------------------------------------------------
# the tables
def _norm(s: str) -> str:
    return re.sub(r"[\s=_()\-]", "", str(s).lower())


def _rate(setting: str) -> float | None:
    m = re.fullmatch(r"\s*([0-9.]+)\s*bp[pv]\s*", setting)
    return float(m.group(1)) if m else None


def _setting_matches(r: Published, label: str, point: str, display: str, target: float | None,
                     ablation: bool) -> bool:
    """Whether a published setting describes this row of ours (label, rate point, target bpv)."""
    if not r.setting:
        return not ablation
    rate = _rate(r.setting)
    if rate is not None:
        return not ablation and target is not None and math.isclose(rate, target, rel_tol=1e-6)
    lab = label.removesuffix(" (ours)")
    if display and lab.startswith(display):
        lab = lab[len(display):]
    return _norm(r.setting) in {_norm(lab), _norm(point)}


def _reference(rows: list[Published], label: str, point: str, display: str, target: float | None,
               ablation: bool) -> float | None:
    hits = {r.value for r in rows if _setting_matches(r, label, point, display, target, ablation)}
    return hits.pop() if len(hits) == 1 else None


def _section(rows: Iterable[Published]) -> Section:
    groups: dict[tuple[str, str, str, str, str, str], list[Published]] = {}
    for r in rows:
        groups.setdefault((r.paper, r.table, r.method, r.dataset, r.setting, r.source), []).append(r)
    cells = [[method, dataset, setting, ", ".join(f"{METRIC_LABELS.get(r.metric, r.metric)} {r.display()}" for r in rs),
              source] for (_, _, method, dataset, setting, source), rs in groups.items()]
    records = [{"published_paper": r.paper, "published_table": r.table, "method": r.method,
                "published_dataset": r.dataset, "published_setting": r.setting, "published_metric": r.metric,
                "published_value": r.value, "published_unit": r.unit, "published_source": r.source} for r in rows]
    sources = ", ".join(dict.fromkeys(r.source for r in rows))
    return Section("published", f"Published values ({sources}), as printed; in parentheses beside ours where "
                                "method and dataset correspond",
                   ["Method", "Dataset", "Setting", "Values", "Source"], cells, records)


def attach(t: Table, df: pd.DataFrame | None = None, path: str | Path | None = None) -> Table:
    """Add the published values to a generated table: beside ours (Row.reference) where method,
    dataset and setting correspond, and the whole paper table as a "published" section.

    df: the prepared summary the table was built from (its codec types, display names, targets).
    """
    pub = for_table(t, path)
    if not pub:
        return t
    ctype: dict[str, str] = {}
    display: dict[str, str] = {}
    target: dict[tuple[str, str], float] = {}
    if df is not None and len(df):
        types = df["codec_type"] if "codec_type" in df.columns else df["codec"]
        ctype = dict(zip(df["codec"].astype(str), types.astype(str)))
        if "display_name" in df.columns:
            display = dict(zip(df["codec"].astype(str), df["display_name"].astype(str)))
        for c, p, b in zip(df["codec"], df["point"], df["target_bpp"] if "target_bpp" in df.columns else []):
            f = num(b)
            if f is not None:
                target.setdefault((str(c), str(p)), f)
    papers = {r.paper for r in pub}
    for row in t.rows:
        codec = str(row.meta.get("codec", ""))
        point = str(row.meta.get("point", ""))
        names = {n for p in papers for n in paper_methods(ctype.get(codec, codec), p)}
        if not names:
            continue
        ablation = codec.startswith("ablation_")
        for col in t.columns:
            ds = col.group or str(row.meta.get("dataset", ""))
            dsn = paper_datasets(ds)
            if not dsn:
                continue
            metric = col.key.split("|")[-1]
            metric = PROTOCOL_ALIASES.get(metric, metric)
            cand = [r for r in pub if r.method in names and r.dataset in dsn and r.metric == metric]
            ref = _reference(cand, row.label, point, display.get(codec, ""), target.get((codec, point)), ablation)
            if ref is not None:
                row.reference[col.key] = ref
    t.sections.append(_section(pub))
    return t
