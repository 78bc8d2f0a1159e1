"""The seeds' published numbers (volbench/paper/published.csv) and how the paper tables show them."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from volbench.codecs.base import get_codec
from volbench.paper import formatting as fmt
from volbench.paper import published, selection, tables

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT / "workflow" / "volbench" / "paper" / "published.csv"
COLUMNS = ["paper", "table", "method", "dataset", "setting", "metric", "value", "unit", "note"]
KEY = ("paper", "table", "method", "dataset", "setting", "metric")


def raw_rows() -> list[dict[str, str]]:
    """The CSV read directly (not through the module under test)."""
    with open(CSV, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------------------------
# the CSV
def test_csv_parses_with_the_columns_and_no_empty_values():
    with open(CSV, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert header == COLUMNS
    rows = raw_rows()
    assert rows
    for i, r in enumerate(rows, start=2):
        for c in ("paper", "table", "method", "metric", "value", "unit"):
            assert r[c].strip(), f"line {i}: empty {c}"
        assert r["paper"] in {"000", "001", "002", "003", "004"}, i
        assert r["table"] == "headline" or r["table"].startswith("Table "), i
        float(r["value"])  # a number
        assert "," not in r["value"] and "×" not in r["value"], i
    # one value per row: no (paper, table, method, dataset, setting, metric) twice
    dup = [k for k, n in Counter(tuple(r[c] for c in KEY) for r in rows).items() if n > 1]
    assert not dup
    assert len(published.load()) == len(rows)
    df = pd.read_csv(CSV, dtype={"paper": str})
    assert list(df.columns) == COLUMNS and df["value"].dtype.kind == "f"


def test_every_required_table_is_covered():
    n = Counter((r["paper"], r["table"]) for r in raw_rows())
    expected = {
        ("000", "Table 1"): 7 * 5 * 3 - 5,  # 7 methods x 5 datasets x (PSNR, SSIM, Time); HEVC has no time
        ("000", "Table 2"): 6 * 7 * 2,      # 6 rows x 7 datasets x (Mem., Comp.)
        ("000", "Table 3"): 4 * 5 * 2,
        ("000", "Table 4"): 12 * 4,         # 12 configurations x (PSNR, SSIM, Time, Gau.)
        ("000", "Table 5"): 3 * 2 * 6,
        ("001", "Table 2"): 5 * 6,
        ("001", "Table 3"): 2 * 5 + 4,      # + the delta line
        ("001", "Table 5"): 6 * 5,
        ("001", "Table 8"): 6 * 4,
        ("004", "Table 1"): 6 * 3 * 2,      # mean and std
        ("004", "Table 2"): 3 * 3 * 2,
        ("004", "Table 3"): 3 * 3 * 2,
    }
    for key, count in expected.items():
        assert n[key] == count, key
    assert n[("001", "headline")] >= 3 and n[("000", "headline")] >= 1


def one(paper, table, method, dataset, setting, metric) -> float:
    hits = [float(r["value"]) for r in raw_rows()
            if (r["paper"], r["table"], r["method"], r["dataset"], r["setting"], r["metric"])
            == (paper, table, method, dataset, setting, metric)]
    assert len(hits) == 1, (paper, table, method, dataset, setting, metric, hits)
    return hits[0]


def test_spot_values_as_printed():
    neuron = "BigNeuron gold166 10-2900-control-cell-05"
    assert one("001", "headline", "VolMicro", neuron, "0.073 bpp", "psnr_2d") == 36.58
    assert one("001", "headline", "VolMicro", neuron, "0.073 bpp", "compression_ratio") == 231
    assert one("001", "headline", "VolMicro", neuron, "RTX 3080", "decode_mvox_s") == 51
    assert one("000", "Table 1", "Ours", "ABUS", "iter=30k", "psnr_2d") == 33.07
    assert one("000", "Table 1", "INIF", "ABUS", "", "encode_seconds") == 5040  # 1h24m
    assert one("000", "Table 2", "Ours", "Tribolium high", "", "compression_ratio") == 26
    assert one("000", "Table 2", "Ours", "Tribolium high", "w/o Quant.", "size_mb") == 9.3
    assert one("000", "Table 3", "3DGS", "hiPSC", "", "psnr_3d") == 15.20
    assert one("000", "Table 4", "Ours", "Tribolium high", "σz = δz/10", "n_gaussians") == 215000
    assert one("000", "Table 5", "NeurComp", "CREMI", "", "encode_seconds") == 11 * 3600
    assert one("001", "Table 2", "ZFP", neuron, "10.23 bpp", "psnr_2d") == 41.45
    assert one("001", "Table 3", "COIN (SIREN)", neuron, "0.073 bpp", "decode_ms") == 19424
    assert one("001", "Table 5", "VolMicro", neuron, "– Sparse gating", "encode_minutes") == 42.3
    assert one("001", "Table 8", "VolMicro", neuron, "Exact (K = N)", "decode_mvox_s") == 0.34
    assert one("004", "Table 1", "Ours", "INTERGROWTH-21st fetal brain ultrasound", "25% Axial Slices",
               "psnr_std") == 6.23
    assert one("004", "Table 3", "Ours", "HVSMR-2.0", "Coronal", "ssim") == 0.9798


def test_ambiguous_readings_carry_a_note():
    rows = raw_rows()
    noted = {(r["paper"], r["table"]) for r in rows if r["note"]}
    for key in [("000", "Table 1"), ("000", "Table 3"), ("000", "Table 4"), ("001", "Table 2"),
                ("004", "Table 1"), ("004", "Table 3")]:
        assert key in noted, key
    zfp = [r for r in rows if r["paper"] == "001" and r["method"] == "ZFP" and r["metric"] == "psnr_2d"]
    assert "87.45" in zfp[0]["note"]  # seed 002 prints another ZFP PSNR


def test_lookup_and_name_mappings():
    vm = published.lookup("001", "Table 3", method="volmicro", metric="decode_mvox_s")
    assert [r.value for r in vm] == [51.0] and vm[0].method == "VolMicro (Ours)"
    gp = published.lookup("000", "Table 1", method="gaussianpile", dataset="abus_001", metric="psnr_2d")
    assert sorted((r.setting, r.value) for r in gp) == [("iter=10k", 32.25), ("iter=30k", 33.07)]
    assert published.lookup(0, "Table 1", method="HEVC", dataset="ABUS", metric="ssim_2d")[0].value == 0.729
    assert published.lookup("000", "Table 9") == []
    # every name a mapping gives is one the CSV uses
    methods = {(r["paper"], r["method"]) for r in raw_rows()}
    for ctype, per in published.METHODS.items():
        get_codec(ctype)  # a real codec type
        for paper, names in per.items():
            assert any((paper, n) in methods for n in names), (ctype, paper)
    datasets = {r["dataset"] for r in raw_rows()}
    paper_yaml = (ROOT / "config" / "paper.yaml").read_text()
    for key, names in published.DATASETS.items():
        assert f"{key}:" in paper_yaml, key  # a dataset key of config/paper.yaml
        assert all(n in datasets for n in names), key
    assert published.paper_datasets("neuron") == ()  # volbench's synthetic datasets match nothing


# ----------------------------------------------------------------------------------------------
# the tables
NVOX = 16 * 64 * 64


def row(ds, codec, ctype, point, bpv, p2, s2, p3, s3, enc, *, params=None, target=None, dec=1.0, lpips=0.3):
    nbytes = bpv * NVOX / 8
    return {"dataset": ds, "codec": codec, "codec_type": ctype, "point": point, "params": json.dumps(params or {}),
            "target_bpp": target if target is not None else np.nan, "knob": "", "knob_value": np.nan,
            "bytes": nbytes, "original_bytes": 2 * NVOX, "compression_ratio": 2 * NVOX / nbytes, "bpv": bpv,
            "psnr_2d": p2, "ssim_2d": s2, "psnr_3d": p3, "ssim_3d": s3, "lpips": lpips, "encode_seconds": enc,
            "decode_seconds": dec, "decode_mvox_s": NVOX / dec / 1e6, "n_voxels": NVOX, "lossless": False,
            "status": "ok", "error": "", "versions": "{}", **get_codec(ctype).describe()}


GP = {"preset": "paper", "iterations": 30000, "n_gaussians": 1000000}
VM = {"preset": "paper", "cutoff": 3.0, "gate": "mlp"}


def summary(datasets=("neuron", "cells", "isbi")) -> pd.DataFrame:
    rows = []
    for ds in datasets:
        rows += [
            row(ds, "hevc", "hevc", "crf-16", 1.0, 30, 0.70, 29, 0.72, 0.8, dec=0.05),
            row(ds, "hevc", "hevc", "target_bpp-0.073", 0.074, 24, 0.55, 23, 0.56, 3.0, target=0.073, dec=0.05),
            row(ds, "siren", "siren", "target_bpp-0.073", 0.072, 27, 0.62, 26, 0.63, 600.0, target=0.073, dec=19.4),
            row(ds, "volmicro", "volmicro", "target_bpp-0.073", 0.073, 26, 0.66, 25.5, 0.67, 426.0, target=0.073,
                dec=1.032, lpips=0.278, params=VM),
            row(ds, "gaussianpile", "gaussianpile", "iter-30k", 0.5, 33, 0.80, 33.5, 0.85, 443.0, params=GP),
        ]
    ds = datasets[0]
    rows += [
        row(ds, "ablation_gp_sz01", "gaussianpile", "iter-30k", 0.5, 34.25, 0.927, 30, 0.8, 489.0,
            params={**GP, "sigma_z": 0.1}),
        row(ds, "ablation_gp_noquant", "gaussianpile", "iter-30k", 5.0, 34.0, 0.81, 34.5, 0.85, 440.0,
            params={**GP, "quantize": False}),
        row(ds, "ablation_vm_nogate", "volmicro", "target_bpp-0.073", 0.073, 26.9, 0.65, 25, 0.6, 2538.0,
            target=0.073, params={**VM, "gate": "none"}),
        row(ds, "ablation_vm_cutoff_2", "volmicro", "target_bpp-0.073", 0.073, 26.0, 0.60, 25, 0.6, 430.0,
            target=0.073, dec=0.5, params={**VM, "cutoff": 2.0}),
    ]
    return selection.prepare(pd.DataFrame(rows))


def context(datasets) -> selection.Context:
    mod = {"isbi": "em", "isbi2012": "em"}
    return selection.Context.from_config({
        "datasets": {d: {"modality": mod.get(d, "confocal"), "spacing": [1.0, 1.0, 1.0]} for d in datasets},
        "codecs": {"hevc": {}, "siren": {}, "volmicro": {}, "gaussianpile": {}}, "matched_bpp": [0.073]})


def expected_block(name: str) -> list[tuple[str, str, str, str, list[tuple[str, str]]]]:
    """(method, dataset, setting, source, [(metric, value)]) of the CSV rows of a table, in order."""
    out: dict[tuple[str, str, str, str], list[tuple[str, str]]] = {}
    for paper, tab in published.TABLE_SOURCES[name]:
        for r in raw_rows():
            if r["paper"] == paper and r["table"] == tab:
                key = (r["method"], r["dataset"], r["setting"], f"seed {paper} {tab}")
                out.setdefault(key, []).append((r["metric"], r["value"]))
    return [(*k, v) for k, v in out.items()]


@pytest.mark.parametrize("name", sorted(published.TABLE_SOURCES))
def test_published_block_lists_exactly_the_csv_rows_of_the_table(name):
    sources = published.TABLE_SOURCES[name]
    assert name in tables.GENERATORS and sources
    datasets = ("neuron", "cells", "isbi")
    t = tables.build(name, summary(datasets), context(datasets))
    assert not any(r.reference for r in t.rows)  # synthetic data: nothing is beside ours
    [sec] = [s for s in t.sections if s.key == "published"]
    exp = expected_block(name)
    assert [tuple(c[:3]) + (c[4],) for c in sec.rows] == [e[:4] for e in exp]
    by_metric = {(r.paper, r.table, r.method, r.dataset, r.setting, r.metric): r for r in published.load()}
    for cells, (method, ds, setting, source, vals) in zip(sec.rows, exp):
        paper, tab = source.removeprefix("seed ").split(" ", 1)
        shown = cells[3].split(", ")
        assert len(shown) == len(vals)
        for text, (metric, value) in zip(shown, vals):
            p = by_metric[(paper, tab, method, ds, setting, metric)]
            assert p.printed == value
            assert text == f"{published.METRIC_LABELS.get(metric, metric)} {p.display()}"
            if p.unit not in ("s", "count"):
                assert value in text  # the number as printed
    # every format carries the block
    md, tex, html = fmt.to_markdown(t), fmt.to_latex(t), fmt.to_html(t)
    assert sec.title in md and "| Method | Dataset | Setting | Values | Source |" in md
    assert f"| {sec.rows[0][0]} |" in md and sources[0][1] in tex and "<table class='published'>" in html
    assert md.count(f"seed {sources[0][0]} {sources[0][1]} |") == len(exp)
    out = pd.read_csv(io.StringIO(fmt.to_csv(t)), dtype={"published_paper": str})
    pub = out[out["block"] == "published"]
    got = sorted(zip(pub["published_paper"], pub["published_table"], pub["method"], pub["published_metric"],
                     pub["published_value"]))
    want = sorted((p, t_, r["method"], r["metric"], float(r["value"])) for p, t_ in sources
                  for r in raw_rows() if (r["paper"], r["table"]) == (p, t_))
    assert got == want


def test_block_formats_durations_and_counts_like_the_paper():
    t = tables.build("gaussianpile_table4", summary(("neuron",)), context(("neuron",)))
    md = fmt.to_markdown(t)
    assert "| Ours | Tribolium high | σz = δz/10 | 2D PSNR 34.25 dB, 2D SSIM 0.927, Time 8m9s, Gau. 215k | " \
           "seed 000 Table 4 |" in md
    t1 = fmt.to_markdown(tables.build("gaussianpile_table1", summary(), context(("neuron", "cells"))))
    assert "| INIF | ABUS |  | 2D PSNR 24.84 dB, 2D SSIM 0.608, Time 1h24m | seed 000 Table 1 |" in t1


def test_matching_method_and_dataset_shows_the_published_value_beside_ours():
    # the papers' datasets under their config/paper.yaml keys
    df = summary(("abus_001", "bigneuron_drg"))
    ctx = context(("abus_001", "bigneuron_drg"))
    t = tables.build("gaussianpile_table1", df, ctx)
    by = {r.label: r for r in t.rows}
    assert by["GaussianPile"].reference == {"abus_001|psnr_2d": 33.07, "abus_001|ssim_2d": 0.825,
                                            "abus_001|encode_seconds": 780.0}  # iter-30k <-> iter=30k
    assert by["HEVC (x265), crf 16"].reference == {"abus_001|psnr_2d": 29.67, "abus_001|ssim_2d": 0.729}
    assert not by["HEVC (x265), 0.073 bpv"].reference  # the paper's HEVC is CRF 16
    assert not by["VolMicro"].reference  # not in seed 000
    md = fmt.to_markdown(t)
    assert "| GaussianPile | **33.00** (33.07) | **0.800** (0.825) | 7m23s (13m) |" in md
    assert "(33.07)" in fmt.to_latex(t) and "(33.07)" in fmt.to_html(t)
    f = fmt.to_frame(t).set_index("method")
    assert f.loc["GaussianPile", "abus_001 PSNR (published)"] == pytest.approx(33.07)

    t3 = tables.build("volmicro_table3", df, ctx)
    vm = [r for r in t3.rows if r.block == "bigneuron_drg" and r.label == "VolMicro"][0]
    assert vm.reference["psnr_2d"] == 36.58 and vm.reference["decode_mvox_s"] == 51.0
    assert "| bigneuron_drg | VolMicro | 26.00 (36.58) |" in fmt.to_markdown(t3)
    assert not [r for r in t3.rows if r.block == "abus_001" and r.reference]  # other datasets: none

    t2 = tables.build("volmicro_table2", df, ctx)
    ref = {r.label: r.reference for r in t2.rows if r.block == "bigneuron_drg"}
    assert ref["COIN (SIREN)"]["compression_ratio"] == 231 and ref["HEVC (x265), crf 16"] == {}
    assert ref["HEVC (x265), 0.073 bpv"] == {}  # the paper's HEVC row is at 0.316 bpp


def test_ablation_rows_match_their_published_setting():
    df = summary(("tribolium_high", "bigneuron_drg"))
    ctx = context(("tribolium_high", "bigneuron_drg"))
    t4 = tables.build("gaussianpile_table4", df, ctx)
    ref = {r.label: r.reference for r in t4.rows if r.block.startswith("tribolium_high")}
    assert ref["σz = δz/10"]["psnr_2d"] == 34.25 and ref["σz = δz/10"]["n_gaussians"] == 215000
    assert ref["σz = δz (ours)"]["psnr_2d"] == 36.67
    t2 = tables.build("gaussianpile_table2", df, ctx)
    ref = {r.label: r.reference for r in t2.rows}
    assert ref["GaussianPile w/o Quant."] == {"tribolium_high|size_mb": 9.3, "tribolium_high|compression_ratio": 5.0}
    assert ref["GaussianPile"]["tribolium_high|compression_ratio"] == 26.0
    t5 = tables.build("volmicro_table5", summary(("bigneuron_drg",)), context(("bigneuron_drg",)))
    ref = {r.label: r.reference for r in t5.rows}
    assert ref["Full model"]["psnr_2d"] == 36.58 and ref["– Sparse gating"]["encode_minutes"] == 42.3


def test_empty_table_still_lists_the_published_values(tmp_path):
    t = tables.build("volmicro_table8", summary(("neuron",)).iloc[:0], context(("neuron",)))
    assert t.empty and t.sections
    fmt.write_table(t, tmp_path)
    assert "seed 001 Table 8" in (tmp_path / "volmicro_table8.md").read_text()
    assert "seed 001 Table 8" in (tmp_path / "volmicro_table8.html").read_text()
    assert "seed 001 Table 8" in (tmp_path / "volmicro_table8.tex").read_text()
    out = pd.read_csv(tmp_path / "volmicro_table8.csv")
    assert "note" in out.columns and (out["block"] == "published").sum() == 6 * 4
