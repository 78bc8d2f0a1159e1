"""BD-rate / BD-PSNR against an anchor with the bjontegaard package (pchip)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from volbench import cli
from volbench.codecs.base import get_codec
from volbench.paper import bdrate as B
from volbench.paper import selection

# the bjontegaard package's README example (x265 presets)
RATE_A = [9487.76, 4593.60, 2486.44, 1358.24]
PSNR_A = [40.037, 38.615, 36.845, 34.851]
RATE_T = [9787.80, 4469.00, 2451.52, 1356.24]
PSNR_T = [40.121, 38.651, 36.970, 34.987]


def test_readme_example_pchip_and_cubic():
    r = B.bd_pair(RATE_A, PSNR_A, RATE_T, PSNR_T, method="pchip")
    assert r["bd_rate"] == pytest.approx(-4.4175, abs=5e-4)
    assert r["bd_psnr"] == pytest.approx(0.1197, abs=5e-4)
    assert r["rate_note"] == "" and r["psnr_note"] == ""
    assert B.bd_pair(RATE_A, PSNR_A, RATE_T, PSNR_T, method="cubic")["bd_rate"] == pytest.approx(-4.4205, abs=5e-4)


def test_point_order_and_lossless_points_do_not_matter():
    order = [2, 0, 3, 1]
    r = B.bd_pair([RATE_A[i] for i in order] + [50000.0], [PSNR_A[i] for i in order] + [math.inf],
                  RATE_T[::-1], PSNR_T[::-1])
    assert r["bd_rate"] == pytest.approx(-4.4175, abs=5e-4)
    assert r["n_anchor"] == 4


def test_half_the_rate_is_minus_fifty_percent_and_identical_is_zero():
    half = [x / 2 for x in RATE_A]
    r = B.bd_pair(RATE_A, PSNR_A, half, PSNR_A)
    assert r["bd_rate"] == pytest.approx(-50.0, abs=1e-9)
    assert B.bd_pair(RATE_A, PSNR_A, RATE_A, PSNR_A)["bd_rate"] == pytest.approx(0.0, abs=1e-12)
    shifted = B.bd_pair(RATE_A, PSNR_A, RATE_A, [p + 1.5 for p in PSNR_A])
    assert shifted["bd_psnr"] == pytest.approx(1.5, abs=1e-9)


def test_no_overlap_is_said_not_computed():
    r = B.bd_pair(RATE_A, PSNR_A, [0.1, 0.2, 0.3, 0.4], [50.0, 51.0, 52.0, 53.0])
    assert r["bd_rate"] is None and r["bd_psnr"] is None
    assert r["overlap_psnr"] == 0.0 and r["overlap_rate"] == 0.0
    assert "overlap 0%" in r["rate_note"] and "overlap 0%" in r["psnr_note"]


def test_little_overlap_and_too_few_points():
    # PSNR ranges overlap 10% of their union: below the 75% default
    r = B.bd_pair([1, 2, 4, 8], [30, 32, 34, 36], [1, 2, 4, 8], [35.4, 37, 39, 41])
    assert r["bd_rate"] is None and "< 75%" in r["rate_note"]
    assert r["bd_psnr"] is not None  # the rate ranges coincide
    r = B.bd_pair([1, 2, 4], [30, 32, 34], [1, 2, 4, 8], [30, 32, 34, 36])
    assert r["bd_rate"] is None and "too few points (anchor 3, test 4; need 4)" in r["rate_note"]
    r = B.bd_pair([1, 2, 4, 8], [30, 32, np.nan, 36], [1, 2, 4, 8], [30, 32, 34, 36])
    assert "anchor 3" in r["rate_note"]


def _summary():
    rows = []

    def add(ds, codec, ctype, bpv, psnr):
        rows.append({"dataset": ds, "codec": codec, "codec_type": ctype, "point": f"p{bpv}", "bpv": bpv,
                     "psnr_2d": psnr, "psnr_3d": psnr - 1, "status": "ok", "params": json.dumps({}),
                     **get_codec(ctype).describe()})

    for ds in ("a", "b"):
        for r, p in zip(RATE_A, PSNR_A):
            add(ds, "hevc", "hevc", r / 1000, p)
        for r, p in zip(RATE_T, PSNR_T):
            add(ds, "jpeg2000", "jpeg2000", r / 1000, p)
        add(ds, "volmicro", "volmicro", 0.073, 30.0)  # one point only
        add(ds, "zstd", "zstd", 6.0, math.inf)  # lossless: no curve
    for r, p in zip(RATE_T, PSNR_T):
        add("c", "jpeg2000", "jpeg2000", r / 1000, p)  # no anchor on c
    return selection.prepare(pd.DataFrame(rows))


def test_frame_per_dataset_codec_metric():
    f = B.bd_frame(_summary(), anchor="hevc")
    j = f[(f.dataset == "a") & (f.codec == "jpeg2000") & (f.metric == "psnr_2d")].iloc[0]
    assert j["bd_rate_pct"] == pytest.approx(-4.4175, abs=5e-4)  # bpv scaling does not change BD-rate
    j3 = f[(f.dataset == "a") & (f.codec == "jpeg2000") & (f.metric == "psnr_3d")].iloc[0]
    assert j3["bd_rate_pct"] == pytest.approx(-4.4175, abs=5e-4)
    v = f[(f.dataset == "b") & (f.codec == "volmicro")].iloc[0]
    assert pd.isna(v["bd_rate_pct"]) and "too few points" in v["rate_note"]
    c = f[f.dataset == "c"].iloc[0]
    assert "anchor hevc has no results on c" in c["rate_note"]
    assert set(f["codec"]) == {"jpeg2000", "volmicro", "zstd"}  # the anchor is not compared with itself
    z = f[(f.dataset == "a") & (f.codec == "zstd")].iloc[0]
    assert bool(z["lossless"]) and not bool(j["lossless"]) and pd.isna(z["bd_rate_pct"])


def test_cli_writes_tables_with_reasons(tmp_path):
    df = _summary().drop(columns=["_params", "size_mb"])
    df.to_csv(tmp_path / "summary.csv", index=False)
    rc = cli.main(["bdrate", "--summary", str(tmp_path / "summary.csv"), "--config-json", '{"anchor": "hevc"}',
                   "--out", str(tmp_path / "paper")])
    assert rc == 0
    md = (tmp_path / "paper" / "bdrate.md").read_text()
    assert "BD-rate (%)" in md and "BD-PSNR (dB)" in md and "| -4.42 |" in md and "pchip" in md  # unit in the header
    assert "| a | JPEG2000 (slice-wise) |" in md  # the codec's display name
    # a missing number is a dash with a short marker, the reason once under the table
    assert "| a | VolMicro | —<sup>a</sup> | —<sup>a</sup> | —<sup>a</sup> | —<sup>a</sup> |" in md
    assert "<sup>a</sup> fewer than 4 distinct finite rate points on one of the two curves" in md
    assert "too few points" not in md and "<sup>b</sup>" not in md  # no footnote without a row that uses it
    assert "Skipped (the anchor hevc has no results there): c." in md and "| c |" not in md
    csv = pd.read_csv(tmp_path / "paper" / "bdrate.csv")
    assert len(csv) == 2 * 3 * 2 + 2  # datasets a, b: 3 codecs x 2 metrics; dataset c: 1 codec x 2 metrics
    assert "Not compared (lossless: every point has infinite PSNR" in md and "Zstandard" not in md.split("*Not compared")[0]
    assert "): Zstandard (lossless)." in md  # lossless on every dataset with an anchor: no dataset list
    tex = (tmp_path / "paper" / "bdrate.tex").read_text()
    assert "BD-rate (\\%)" in tex and "-4.42 &" in tex and "\\textsuperscript{a}" in tex


def test_missing_anchor_is_a_note_not_an_error(tmp_path):
    df = _summary()
    df = df[df["codec"] != "hevc"]
    paths = B.write_bdrate(df, tmp_path, anchor="hevc")
    assert sorted(p.name for p in paths) == ["bdrate.csv", "bdrate.html", "bdrate.md", "bdrate.tex"]
    md = (tmp_path / "bdrate.md").read_text()
    assert "The anchor hevc has no results in this run" in md and "(jpeg2000, volmicro, zstd)" in md
    assert "JPEG2000 (slice-wise)" not in md  # no row of reasons: the note says it once
    csv = pd.read_csv(tmp_path / "bdrate.csv")
    assert csv["bd_rate_pct"].isna().all() and csv["rate_note"].str.contains("anchor hevc has no results").all()
    # another anchor that did run gives numbers: jpeg2000 against itself is left out, hevc absent
    f = B.bd_frame(_summary(), anchor="jpeg2000")
    h = f[(f.dataset == "a") & (f.codec == "hevc") & (f.metric == "psnr_2d")].iloc[0]
    assert h["bd_rate_pct"] == pytest.approx(4.62, abs=0.05)  # the inverse comparison: positive


def test_lossless_mode_rows_name_the_datasets_where_they_are_lossless(tmp_path):
    """A lossless mode that is lossless on one dataset only is "not compared" there, named by
    dataset, and near-lossless (a row, not ranked) where it is not."""
    df = _summary().drop(columns=["_params", "size_mb"])
    extra = [{"dataset": "a", "codec": "hevc_lossless", "codec_type": "hevc", "point": "lossless", "bpv": 8.0,
              "psnr_2d": 82.6, "psnr_3d": 82.6, "status": "ok", "lossless": False, "params": json.dumps({"lossless": True}),
              **get_codec("hevc").describe()},
             {"dataset": "b", "codec": "hevc_lossless", "codec_type": "hevc", "point": "lossless", "bpv": 4.0,
              "psnr_2d": math.inf, "psnr_3d": math.inf, "status": "ok", "lossless": True,
              "params": json.dumps({"lossless": True}), **get_codec("hevc").describe()}]
    df = selection.prepare(pd.concat([df, pd.DataFrame(extra)], ignore_index=True))
    B.write_bdrate(df, tmp_path, anchor="hevc")
    md = (tmp_path / "bdrate.md").read_text()
    assert "| a | HEVC (x265), near-lossless |" in md  # a row on a, named for what it is there
    assert "| b | HEVC (x265), " not in md  # no row on b, where it is lossless ...
    assert "HEVC (x265), lossless (b)" in md.split("*Not compared")[1]  # ... but a note naming b
