"""The paper table generators on small hand-made summaries: values, best marking, notes, files."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from volbench import cli
from volbench.codecs.base import get_codec
from volbench.paper import ablation, selection, tables
from volbench.paper import formatting as fmt

CONFIG = {
    "datasets": {"us": {"modality": "ultrasound"}, "tri": {"modality": "confocal", "spacing": [2.0, 0.5, 0.5]}, "isbi": {"modality": "em"}},
    "codecs": {"hevc": {}, "zstd": {}, "siren": {}, "volmicro": {}, "gaussianpile": {}},
    "matched_bpp": [0.073],
}


def row(ds, codec, ctype, point, bpv, p2, s2, p3, s3, enc, *, params=None, target=None, dec=1.0, lpips=0.3,
        status="ok", knob=""):
    nvox = 16 * 64 * 64
    nbytes = bpv * nvox / 8
    return {"dataset": ds, "codec": codec, "codec_type": ctype, "point": point, "params": json.dumps(params or {}),
            "target_bpp": target if target is not None else np.nan, "knob": knob, "knob_value": np.nan,
            "bytes": nbytes, "original_bytes": 2 * nvox, "compression_ratio": 2 * nvox / nbytes, "bpv": bpv,
            "psnr_2d": p2, "ssim_2d": s2, "psnr_3d": p3, "ssim_3d": s3, "lpips": lpips, "psnr_fg": np.nan,
            "ssim_fg": np.nan, "encode_seconds": enc, "decode_seconds": dec, "decode_mvox_s": nvox / dec / 1e6,
            "encode_peak_mb": 10.0, "decode_peak_mb": 10.0, "n_voxels": nvox, "lossless": False, "status": status,
            "error": "" if status == "ok" else "boom", "versions": "{}", **describe(ctype)}


def describe(ctype: str) -> dict:
    """What encode.json records and scoring copies into the row: the codec's own description."""
    return get_codec(ctype).describe()


def summary() -> pd.DataFrame:
    rows = []
    for ds, off in (("us", 0.0), ("tri", 1.0), ("isbi", 2.0)):
        rows += [
            row(ds, "hevc", "hevc", "crf-16", 1.0, 30 + off, 0.70, 29 + off, 0.72, 0.8, dec=0.05),
            row(ds, "hevc", "hevc", "target_bpp-0.073", 0.074, 24 + off, 0.55, 23 + off, 0.56, 3.0,
                target=0.073, dec=0.05, lpips=0.40),
            row(ds, "siren", "siren", "target_bpp-0.073", 0.072, 27 + off, 0.62, 26 + off, 0.63, 600.0,
                target=0.073, dec=19.4, lpips=0.316),
            row(ds, "volmicro", "volmicro", "target_bpp-0.073", 0.073, 26 + off, 0.66, 25.5 + off, 0.67, 426.0,
                target=0.073, dec=1.032, lpips=0.278, params={"preset": "paper", "cutoff": 3.0, "gate": "mlp"}),
            row(ds, "gaussianpile", "gaussianpile", "iter-30k", 0.5, 33 + off, 0.80, 33.5 + off, 0.85, 443.0,
                params={"preset": "paper", "iterations": 30000, "n_gaussians": 1000000}),
        ]
    # zstd is configured but its only cell failed: the row stays, with the codec's description
    rows.append(row("isbi", "zstd", "zstd", "level-19", np.nan, *[np.nan] * 4, 0.1, status="failed"))
    return selection.prepare(pd.DataFrame(rows))


def ablations(df: pd.DataFrame) -> pd.DataFrame:
    gp = {"preset": "paper", "iterations": 30000, "n_gaussians": 1000000}
    vm = {"preset": "paper", "cutoff": 3.0, "gate": "mlp"}
    extra = [
        row("tri", "ablation_gp_sz01", "gaussianpile", "iter-30k", 0.5, 34.25, 0.927, 30, 0.8, 489.0,
            params={**gp, "sigma_z": 0.2}),  # tri: dz = 2
        row("tri", "ablation_gp_sz10", "gaussianpile", "iter-30k", 0.3, 23.05, 0.858, 20, 0.7, 557.0,
            params={**gp, "sigma_z": 20.0}),
        row("tri", "ablation_gp_m50k", "gaussianpile", "iter-30k", 0.2, 34.12, 0.932, 30, 0.8, 448.0,
            params={**gp, "n_gaussians": 50000}),
        row("tri", "ablation_gp_noquant", "gaussianpile", "iter-30k", 5.0, 34.0, 0.81, 34.5, 0.85, 440.0,
            params={**gp, "quantize": False}),
        row("tri", "ablation_vm_nogate", "volmicro", "target_bpp-0.073", 0.073, 26.9, 0.65, 25, 0.6, 2538.0,
            target=0.073, params={**vm, "gate": "none"}),
        row("tri", "ablation_vm_uniform", "volmicro", "target_bpp-0.073", 0.073, 26.5, 0.64, 25, 0.6, 432.0,
            target=0.073, params={**vm, "w_edge": 0.0}),
        row("tri", "ablation_vm_cutoff_2", "volmicro", "target_bpp-0.073", 0.073, 26.0, 0.60, 25, 0.6, 430.0,
            target=0.073, dec=0.5, params={**vm, "cutoff": 2.0}),
    ]
    return selection.prepare(pd.concat([df.drop(columns=["_params", "size_mb"]), pd.DataFrame(extra)], ignore_index=True))


def ctx(**kw) -> selection.Context:
    return selection.Context.from_config(CONFIG, **kw)


def frame(t: fmt.Table) -> pd.DataFrame:
    return fmt.to_frame(t).set_index("method")


def test_fmt_duration_like_the_papers():
    assert fmt.fmt_duration(443) == "7m23s"
    assert fmt.fmt_duration(5040) == "1h24m"
    assert fmt.fmt_duration(780) == "13m"
    assert fmt.fmt_duration(0.84) == "0.8s"
    assert fmt.fmt_duration(0.0042) == "4ms"


def test_rows_follow_the_config_order_of_instances_and_the_rate_of_points():
    df = summary()
    cfg = {**CONFIG, "codecs": {"gaussianpile": {}, "hevc": {"rate_points": [{"crf": 16}, {"target_bpp": 0.073}]}}}
    t = tables.build("gaussianpile_table1", df, selection.Context.from_config(cfg))
    # instances in config order; an instance's points by rate (0.074 bpv before 1.0 bpv), not config or label order
    assert [r.label for r in t.rows][:3] == ["GaussianPile", "HEVC (x265), 0.073 bpv", "HEVC (x265), crf 16"]
    assert [c.group for c in t.columns][::3] == ["us", "tri"]  # datasets in config order


def test_gaussianpile_table1_values_and_best():
    t = tables.build("gaussianpile_table1", summary(), ctx())
    f = frame(t)
    # EM dataset left out (it belongs in Table 5); rows = codec x point of the main instances
    assert {c.group for c in t.columns} == {"us", "tri"}
    # zstd is configured but has no result: a row of dashes and a note say so
    assert list(f.index) == ["HEVC (x265), 0.073 bpv", "HEVC (x265), crf 16", "COIN (SIREN)", "VolMicro",
                             "GaussianPile", "Zstandard (lossless)"]
    assert f.loc["Zstandard (lossless)"].drop(["block", "meta_codec", "meta_point", "marks"]).isna().all()
    assert any(n.startswith("— = no result") and "zstd" in n for n in t.notes)
    assert f.loc["GaussianPile", "tri PSNR"] == pytest.approx(34.0)
    assert f.loc["COIN (SIREN)", "us Time"] == pytest.approx(600.0)
    marks = fmt.best_marks(t)
    gp = list(f.index).index("GaussianPile")
    hevc = list(f.index).index("HEVC (x265), crf 16")
    assert marks[(gp, "us|psnr_2d")] == "best" and marks[(gp, "tri|ssim_2d")] == "best"
    assert marks[(hevc, "us|encode_seconds")] == "best"  # time: smaller is better
    assert (hevc, "us|psnr_2d") not in marks
    md = fmt.to_markdown(t)
    assert "| GaussianPile | **33.00** | **0.800** | 7m23s |" in md
    assert "| Zstandard (lossless) | — | — | — | — | — | — |" in md
    assert "Zstandard (lossless) & --- & --- &" in fmt.to_latex(t)
    tex = fmt.to_latex(t)
    assert "\\textbf{33.00}" in tex and "\\multicolumn{3}{c}{us}" in tex


def test_gaussianpile_table2_size_ratio_and_quant_row():
    t = tables.build("gaussianpile_table2", ablations(summary()), ctx())
    f = frame(t)
    assert "GaussianPile w/o Quant." in f.index
    nvox = 16 * 64 * 64
    assert f.loc["GaussianPile", "tri Mem. (MB)"] == pytest.approx(0.5 * nvox / 8 / 1e6)
    assert f.loc["GaussianPile", "tri Comp."] == pytest.approx(16 / 0.5)
    # the smallest file and the largest ratio are the same row (SIREN at 0.072 bpv)
    i = list(f.index).index("COIN (SIREN)")
    marks = fmt.best_marks(t)
    assert marks[(i, "tri|size_mb")] == "best" and marks[(i, "tri|compression_ratio")] == "best"
    # the "w/o Quant." row has no value on datasets where it did not run
    assert pd.isna(f.loc["GaussianPile w/o Quant.", "us Comp."])


def test_gaussianpile_table3_uses_3d_metrics():
    f = frame(tables.build("gaussianpile_table3", summary(), ctx()))
    assert f.loc["VolMicro", "us PSNR"] == pytest.approx(25.5)
    assert f.loc["GaussianPile", "tri SSIM"] == pytest.approx(0.85)


def test_gaussianpile_table4_ablation_blocks_labels_and_gaussian_count():
    df = ablations(summary())
    # the final Gaussian count: the summary's n_gaussians (Codec.file_stats, via encode.json)
    df.loc[df["codec"] == "ablation_gp_m50k", "n_gaussians"] = 85000
    t = tables.build("gaussianpile_table4", df, ctx())
    labels = [(r.block, r.label) for r in t.rows]
    assert labels == [
        ("tri / M / N", "M = 50k"), ("tri / M / N", "M = 1000k (ours)"),
        ("tri / σz", "σz = δz/10"), ("tri / σz", "σz = δz (ours)"), ("tri / σz", "σz = 10δz"),
    ]
    vals = {(r.block, r.label): r.values for r in t.rows}
    assert vals[("tri / M / N", "M = 50k")]["n_gaussians"] == 85000
    assert pd.isna(vals[("tri / M / N", "M = 1000k (ours)")]["n_gaussians"])  # no count in its row
    assert vals[("tri / σz", "σz = δz (ours)")]["psnr_2d"] == pytest.approx(34.0)
    marks = fmt.best_marks(t)
    # best within each block: sigma block -> dz/10 (34.25) beats the reference (34.0)
    i = labels.index(("tri / σz", "σz = δz/10"))
    j = labels.index(("tri / M / N", "M = 50k"))
    assert marks[(i, "psnr_2d")] == "best" and marks[(j, "psnr_2d")] == "best"
    assert "ablation_gp_noquant" not in {r.meta["codec"] for r in t.rows}  # Table 2's row, not here
    tex = fmt.to_latex(t)
    assert "$\\sigma_z$ = $\\delta_z$/10" in tex


def test_gaussianpile_table5_em_only():
    t = tables.build("gaussianpile_table5", summary(), ctx())
    assert {c.group for c in t.columns} == {"isbi"}
    f = frame(t)
    assert f.loc["GaussianPile", "isbi 3D PSNR"] == pytest.approx(35.5)
    i = list(f.index).index("COIN (SIREN)")
    assert fmt.best_marks(t)[(i, "isbi|compression_ratio")] == "best"


def test_volmicro_table2_best_and_second_best():
    t = tables.build("volmicro_table2", summary(), ctx())
    us = [i for i, r in enumerate(t.rows) if r.block == "us"]
    assert len(us) == 6 and t.rows[us[-1]].label == "Zstandard (lossless)"  # configured, no result: dashes
    marks = fmt.best_marks(t)
    by = {t.rows[i].label: i for i in us}
    assert marks[(by["GaussianPile"], "psnr_2d")] == "best"
    assert marks[(by["HEVC (x265), crf 16"], "psnr_2d")] == "second"
    assert marks[(by["VolMicro"], "lpips")] == "best"
    md = fmt.to_markdown(t)
    assert "<u>30.00</u>" in md and "**33.00**" in md
    assert "\\underline{30.00}" in fmt.to_latex(t)


def test_volmicro_table3_matched_rows_decode_ms_and_delta():
    t = tables.build("volmicro_table3", summary(), ctx())
    us = [r for r in t.rows if r.block == "us"]
    assert [r.label for r in us] == ["HEVC (x265)", "COIN (SIREN)", "VolMicro"]  # only target_bpp 0.073
    vm = us[2].values
    assert vm["decode_ms"] == pytest.approx(1032.0)
    assert vm["bpv"] == pytest.approx(0.073)
    i = t.rows.index(us[0])
    assert fmt.best_marks(t)[(i, "decode_ms")] == "best"  # hevc decodes fastest
    note = [n for n in t.notes if n.startswith("us: Δ VolMicro vs COIN")][0]
    assert "-1.00 dB PSNR" in note and "+0.040 SSIM" in note and "18.8x faster decode" in note


def test_volmicro_table3_uses_seed_001_protocol_when_scored():
    """With metrics.protocol_001 the matched cells carry seed 001's own metrics (10 slices,
    LPIPS VGG16): Table 3 shows them, and its differences use them."""
    df = summary()
    t = df["target_bpp"]
    matched = t.notna() & ((t - 0.073).abs() < 1e-9)
    df["psnr_001"], df["ssim_001"], df["lpips_vgg_001"] = None, None, None
    df.loc[matched, "psnr_001"] = df.loc[matched, "psnr_2d"] + 1.5
    df.loc[matched, "ssim_001"] = df.loc[matched, "ssim_2d"]
    df.loc[matched, "lpips_vgg_001"] = 0.123
    t3 = tables.build("volmicro_table3", df, ctx())
    keys = [c.key for c in t3.columns]
    assert keys[:3] == ["psnr_001", "ssim_001", "lpips_vgg_001"]
    us = [r for r in t3.rows if r.block == "us"]
    assert us[2].values["lpips_vgg_001"] == pytest.approx(0.123)
    assert any("10 seeded slices" in n for n in t3.notes)
    # without them (one matched cell unscored): volbench's protocol, said so
    df.loc[matched & (df["codec"] == "hevc"), "psnr_001"] = None
    t3b = tables.build("volmicro_table3", df, ctx())
    assert [c.key for c in t3b.columns][:3] == ["psnr_2d", "ssim_2d", "lpips"]
    assert any("was not computed" in n for n in t3b.notes)


def test_volmicro_table5_components_and_speedup():
    t = tables.build("volmicro_table5", ablations(summary()), ctx())
    f = frame(t)
    assert list(f.index) == ["Full model", "– Sparse gating", "– Edge weighting"]
    assert f.loc["Full model", "Speedup"] == pytest.approx(1.0)
    assert f.loc["– Sparse gating", "Speedup"] == pytest.approx(426.0 / 2538.0)
    assert f.loc["– Sparse gating", "Time (min)"] == pytest.approx(2538.0 / 60)


def test_volmicro_table8_cutoff():
    t = tables.build("volmicro_table8", ablations(summary()), ctx())
    f = frame(t)
    assert list(f.index) == ["cutoff = 2", "cutoff = 3 (ours)"]
    assert f.loc["cutoff = 2", "Decode (ms)"] == pytest.approx(500.0)
    i = list(f.index).index("cutoff = 2")
    assert fmt.best_marks(t)[(i, "decode_ms")] == "best"


def test_absent_rows_give_a_note_not_an_error(tmp_path):
    df = summary()
    for name in ("gaussianpile_table4", "volmicro_table5", "volmicro_table8"):
        t = tables.build(name, df, ctx())
        assert t.empty and any("config/ablation.yaml" in n for n in t.notes)
        paths = fmt.write_table(t, tmp_path)
        assert sorted(p.suffix for p in paths) == [".csv", ".html", ".md", ".tex"]
        assert "config/ablation.yaml" in (tmp_path / f"{name}.md").read_text()
        assert "note" in pd.read_csv(tmp_path / f"{name}.csv").columns
    t = tables.build("volmicro_table3", df, selection.Context.from_config(CONFIG, matched_bpp=[0.5]))
    assert t.empty and "target_bpp" in t.notes[0]
    no_em = selection.Context.from_config({**CONFIG, "datasets": {"us": {"modality": "ultrasound"}}})
    assert tables.build("gaussianpile_table5", df[df["dataset"] == "us"], no_em).empty


def test_failed_rows_left_out_and_named():
    df = summary()
    df.loc[(df["dataset"] == "us") & (df["codec"] == "siren"), "status"] = "failed"
    t = tables.build("gaussianpile_table1", df, ctx())
    f = frame(t)
    assert pd.isna(f.loc["COIN (SIREN)", "us PSNR"]) and f.loc["COIN (SIREN)", "tri PSNR"] == pytest.approx(28.0)
    assert any("us/siren/target_bpp-0.073" in n for n in t.notes)


def test_ties_and_all_equal_columns():
    df = summary()
    t = tables.build("volmicro_table2", df, ctx())
    # Ratio ties between nothing; a column where every value is equal gets no mark
    df2 = df.copy()
    df2["lpips"] = 0.2
    marks = fmt.best_marks(tables.build("volmicro_table2", df2, ctx()))
    assert not any(k[1] == "lpips" for k in marks)
    assert any(k[1] == "lpips" for k in fmt.best_marks(t))


def test_cli_roundtrip_through_csv_with_inf(tmp_path):
    df = summary().drop(columns=["_params", "size_mb"])
    lossless = row("us", "zstd", "zstd", "level-19", 6.0, math.inf, 1.0, math.inf, 1.0, 0.2)
    lossless["lossless"] = True
    pd.concat([df, pd.DataFrame([lossless])]).to_csv(tmp_path / "summary.csv", index=False)
    (tmp_path / "cfg.json").write_text(json.dumps(CONFIG))
    rc = cli.main(["paper-tables", "--summary", str(tmp_path / "summary.csv"), "--config-json",
                   str(tmp_path / "cfg.json"), "--out", str(tmp_path / "paper"), "--table", "gaussianpile_table1"])
    assert rc == 0
    md = (tmp_path / "paper" / "gaussianpile_table1.md").read_text()
    assert "| Zstandard (lossless) | ∞ | 1.000 |" in md  # lossless rows are not ranked
    assert "$\\infty$" in (tmp_path / "paper" / "gaussianpile_table1.tex").read_text()
    assert not list((tmp_path / "paper").glob(".*tmp*"))  # atomic writes leave no temporaries
    rc = cli.main(["paper-tables", "--summary", str(tmp_path / "missing.csv"), "--out", str(tmp_path)])
    assert rc == 1


def test_pretty_labels_relative_to_dz():
    assert ablation.pretty_param("sigma_z", 0.05, "gaussianpile", dz=0.5) == "σz = δz/10"
    assert ablation.pretty_param("sigma_z", 1.0, "gaussianpile", dz=0.5) == "σz = 2δz"
    assert ablation.pretty_param("sigma_z", 1.0, "gaussianpile") == "σz = 1"
    assert ablation.pretty_param("n_gaussians", 21000, "volmicro") == "N = 21k"
    assert ablation.pretty_param("gate", "none") == "– Sparse gating"
    assert ablation.pretty_param("w_edge", 0.0) == "– Edge weighting"
    assert ablation.pretty_param("densify_until", 0) == "– Adaptive densification"
    assert ablation.pretty_param("quantize", False) == "w/o Quant."
    assert ablation.pretty_param("lr", 0.5) == "lr = 0.5"


def test_ablation_against_the_recorded_parameters():
    """The summary's params are the codec's full parameters as encode.json records them (preset and
    defaults merged in): a row differing only by the preset's own value is no ablation, and the
    reference's count is the preset's."""
    gp = get_codec("gaussianpile")
    ref = gp(preset="paper", iterations=30000).params
    preset_m = ref["n_gaussians"]
    df = summary()
    df = df[df["dataset"] == "tri"].drop(columns=["_params", "size_mb"])
    df.loc[df["codec"] == "gaussianpile", "params"] = json.dumps(ref)
    extra = pd.DataFrame([
        row("tri", "ablation_gp_m50k", "gaussianpile", "iter-30k", 0.2, 30, 0.8, 30, 0.8, 400.0,
            params=gp(preset="paper", iterations=30000, n_gaussians=50000).params),
        row("tri", "ablation_gp_same", "gaussianpile", "iter-30k", 0.2, 30, 0.8, 30, 0.8, 400.0,
            params=gp(preset="paper", iterations=30000, n_gaussians=preset_m).params),
    ])
    t = tables.build("gaussianpile_table4", selection.prepare(pd.concat([df, extra], ignore_index=True)), ctx())
    assert [r.label for r in t.rows] == ["M = 50k", f"M = {preset_m / 1000:g}k (ours)"]


def test_summary_without_codec_descriptions_still_renders():
    """A summary written before the codecs described themselves: codec types as names, config order."""
    df = summary().drop(columns=["_params", "size_mb", "display_name", "family", "table_order", "trains"])
    t = tables.build("gaussianpile_table1", selection.prepare(df), ctx())
    assert [r.label for r in t.rows][:3] == ["hevc, 0.073 bpv", "hevc, crf 16", "siren"]
    no_cfg = selection.Context()
    assert no_cfg.codec_order(selection.prepare(df)) == ["hevc", "siren", "volmicro", "gaussianpile", "zstd"]


def test_codec_order_without_config_follows_table_order():
    df = summary()
    assert selection.Context().codec_order(df) == ["hevc", "zstd", "siren", "volmicro", "gaussianpile"]
    df.loc[df["codec"] == "gaussianpile", "table_order"] = 0
    assert selection.Context().codec_order(df)[0] == "gaussianpile"


def test_init_grid_ablation_block():
    """Table 4's last block: the init variant of config/ablation.yaml against the codec's random init."""
    df = summary()
    df = df[df["dataset"] == "tri"].drop(columns=["_params", "size_mb"])
    df.loc[df["codec"] == "gaussianpile", "params"] = json.dumps({"preset": "paper", "iterations": 30000})
    extra = pd.DataFrame([
        row("tri", "ablation_gp_init_grid", "gaussianpile", "iter-30k", 0.6, 33.5, 0.79, 33, 0.8, 544.0,
            params={"preset": "paper", "iterations": 30000, "init": "grid"}),
    ])
    t = tables.build("gaussianpile_table4", selection.prepare(pd.concat([df, extra], ignore_index=True)), ctx())
    assert [(r.block, r.label) for r in t.rows] == [("tri / Init.", "Init. = Grid"),
                                                      ("tri / Init.", "Init. = Random (ours)")]
    marks = fmt.best_marks(t)
    assert marks[(1, "psnr_2d")] == "best" and marks[(1, "encode_seconds")] == "best"
    assert "Init. = Grid" in fmt.to_latex(t)


def test_gaussianpile_init_parameter_initialises_on_a_grid():
    """`init: grid` (the Table 4 ablation) really changes the initialisation; the paper preset
    initialises at random, the demo preset (the default) from the data."""
    torch = pytest.importorskip("torch")
    from volbench.errors import VolbenchError

    gp = get_codec("gaussianpile")
    vol = np.zeros((4, 12, 12), np.float32)
    vol[1:3, 3:9, 3:9] = 1.0

    def init(**kw):
        return gp(n_gaussians=64, **kw).initial(vol, (1.0, 1.0, 1.0), 64, torch.Generator().manual_seed(0), 1.0)

    grid, rand, data = init(init="grid"), init(init="random"), init(init="data")
    key = "means" if "means" in rand else sorted(rand)[0]
    assert torch.equal(init(preset="paper")[key], rand[key])  # the paper: random initialisation
    assert torch.equal(init()[key], data[key])  # the default (demo) preset: from the data
    assert grid[key].shape != rand[key].shape or not torch.equal(grid[key], rand[key])
    with pytest.raises(VolbenchError, match="init"):
        gp(init="sphere")



# ----------------------------------------------------------------------------------------------
# readers' rules: what is bold, how sizes, ratios and names read, and the footnote markers
def _with_lossless_modes(df: pd.DataFrame) -> pd.DataFrame:
    """+ zstd (lossless everywhere) and an hevc_lossless instance: near-lossless (82.6 dB, 16-bit
    data) on us, bit-exact on tri."""
    base = df.drop(columns=["_params", "size_mb"])
    extra = []
    for ds, psnr, exact in (("us", 82.6, False), ("tri", math.inf, True)):
        r = row(ds, "hevc_lossless", "hevc", "lossless", 8.0, psnr, 1.0, psnr, 1.0, 0.2, params={"lossless": True})
        r["lossless"] = exact
        extra.append(r)
        z = row(ds, "zstd", "zstd", "level-19", 6.0, math.inf, 1.0, math.inf, 1.0, 0.05)
        z["lossless"] = True
        extra.append(z)
    cfg_df = pd.concat([base[base["codec"] != "zstd"], pd.DataFrame(extra)], ignore_index=True)
    return selection.prepare(cfg_df)


def test_lossless_and_lossless_mode_rows_are_not_ranked_and_named_for_what_they_are():
    df = _with_lossless_modes(summary())
    c = selection.Context.from_config({**CONFIG, "codecs": {**CONFIG["codecs"], "hevc_lossless": {"codec": "hevc"}}})
    t = tables.build("gaussianpile_table1", df, c)
    f = frame(t)
    assert "HEVC (x265), lossless mode" in f.index  # lossless on tri, near-lossless on us
    marks = fmt.best_marks(t)
    for lab in ("HEVC (x265), lossless mode", "Zstandard (lossless)"):
        i = list(f.index).index(lab)
        assert not [k for k in marks if k[0] == i], lab  # 82.6 dB and SSIM 1.000 are not "best"
    gp = list(f.index).index("GaussianPile")
    assert marks[(gp, "us|psnr_2d")] == "best"  # the best lossy value is
    md = fmt.to_markdown(t)
    # the near-lossless cell carries a marker, explained once under the table
    assert "| HEVC (x265), lossless mode | 82.60<sup>a</sup> | 1.000 |" in md
    assert "<sup>a</sup> near-lossless here: the lossless mode is not bit-exact on this dataset" in md
    assert "lossy rows (lossless and lossless-mode rows are not ranked)" in md
    assert f.loc["HEVC (x265), lossless mode", "flags"] == "us PSNR:near_lossless"
    # per dataset (VolMicro Table 2 has a block per dataset), the row says what it is there
    t2 = tables.build("volmicro_table2", df, c)
    labels = {(r.block, r.label) for r in t2.rows}
    assert ("us", "HEVC (x265), near-lossless") in labels and ("tri", "HEVC (x265), lossless") in labels
    assert not any(k[0] == i for k in fmt.best_marks(t2) for i, r in enumerate(t2.rows) if "lossless" in r.label)


def test_timing_noise_is_not_crowned():
    cols = [fmt.Col("t", "Time", better="min", kind="seconds")]
    noisy = fmt.Table("x", "x", cols, [fmt.Row(str(v), {"t": v}) for v in (0.003, 0.002, 0.004, 0.9)])
    assert fmt.best_marks(noisy) == {}  # 2 ms vs 3 ms: within the noise, nothing stands out
    clear = fmt.Table("x", "x", cols, [fmt.Row(str(v), {"t": v}) for v in (0.05, 0.8, 3.0)])
    assert fmt.best_marks(clear) == {(0, "t"): "best"}
    close = fmt.Table("x", "x", cols, [fmt.Row(str(v), {"t": v}) for v in (10.0, 10.5, 30.0)])
    assert fmt.best_marks(close) == {}  # 5 % apart: not told apart
    quality = [fmt.Col("p", "PSNR", better="max", kind="psnr")]
    q = fmt.Table("x", "x", quality, [fmt.Row(str(v), {"p": v}) for v in (30.01, 30.02)])
    assert fmt.best_marks(q) == {(1, "p"): "best"}  # quality has no noise rule


def test_sizes_ratios_and_bd_units_read_the_readable_way():
    mb = fmt.Col("s", "Size", kind="mb", unit="MB")
    assert [fmt.fmt_value(mb, v) for v in (0.00142, 0.0325, 0.42, 1.234, 45.6, 2050.0)] == [
        "1.42 kB", "32.5 kB", "420 kB", "1.23 MB", "45.6 MB", "2.05 GB"]
    sp = fmt.Col("x", "Speedup", kind="speedup")
    assert [fmt.fmt_value(sp, v) for v in (1.0, 2.1, 0.3)] == ["1.00×", "2.10× faster", "3.33× slower"]
    t = tables.build("volmicro_table5", ablations(summary()), ctx())
    ours = fmt.to_markdown(t).split("**Published")[0]  # (the published section prints the paper's own)
    assert "5.96× slower" in ours and "0.17" not in ours  # 426 s / 2538 s, said the readable way
    t2 = tables.build("gaussianpile_table2", ablations(summary()), ctx())
    assert "tri Mem. (MB)" in frame(t2).columns  # the CSV keeps the raw MB and says so
    md2 = fmt.to_markdown(t2).split("**Published")[0]
    assert "| tri Mem. ↓ |" in md2 and "(MB)" not in md2.split("\n")[2]  # the cells carry the unit
    assert "| GaussianPile | 4.10 kB |" in md2  # 0.5 bpv x 16x64x64 voxels / 8 = 4,096 bytes
    assert "| COIN (SIREN) | **590 B** |" in md2
    note = [n for n in tables.build("volmicro_table3", summary(), ctx()).notes if n.startswith("tri: Δ")][0]
    assert note.endswith("18.8x faster decode.")
    slow = summary()
    slow.loc[slow["codec"] == "volmicro", "decode_seconds"] = 66.0  # 3.4x COIN's 19.4 s
    note = [n for n in tables.build("volmicro_table3", slow, ctx()).notes if n.startswith("tri: Δ")][0]
    assert note.endswith("3.4x slower decode.")


def test_target_missed_is_marked_and_footnoted_when_the_column_exists():
    df = summary()
    assert not any(r.tags or r.cell_tags for r in tables.build("volmicro_table3", df, ctx()).rows)
    df2 = df.drop(columns=["_params", "size_mb", "target_missed"], errors="ignore")
    df2["target_missed"] = np.where((df2["dataset"] == "us") & (df2["codec"] == "siren"), "True", "")
    df2 = selection.prepare(df2)
    t = tables.build("volmicro_table3", df2, ctx())
    md = fmt.to_markdown(t)
    assert "| us | COIN (SIREN)<sup>a</sup> |" in md and "| tri | COIN (SIREN) |" in md
    assert "<sup>a</sup> rate target missed" in md
    wide = fmt.to_markdown(tables.build("gaussianpile_table1", df2, ctx()))
    assert "| COIN (SIREN) | 27.00<sup>a</sup> |" in wide  # in a table of datasets: that dataset's first value
    assert "\\textsuperscript{a}" in fmt.to_latex(t) and "<sup>a</sup>" in fmt.to_html(t)


def test_one_naming_scheme_without_doubled_parentheses():
    df = _with_lossless_modes(ablations(summary()))
    for name in tables.GENERATORS:
        for r in tables.build(name, df, ctx()).rows:
            assert ") (" not in r.label and "[" not in r.label, (name, r.label)
    assert selection.point_text("target_bpp-0.073") == "0.073 bpv"
    assert selection.point_text("crf-22") == "crf 22" and selection.point_text("mode-reversible") == "reversible"
    assert selection.point_text("target_ratio-18") == "ratio 18" and selection.point_text("own") == "own"
    assert selection.instance_label("gaussianpile_noquant", "gaussianpile", "GaussianPile") == "GaussianPile, noquant"


def test_summary_table_for_the_report():
    from volbench.paper.summary_table import summary_table

    df = _with_lossless_modes(summary())
    t = summary_table(df, ctx())
    us = [r for r in t.rows if r.block == "us"]
    # every cell, the points of an instance by rate, the rate point in words
    assert [r.label for r in us if r.meta["codec"] == "hevc"] == ["HEVC (x265)", "HEVC (x265)"]
    assert [r.values["point"] for r in us if r.meta["codec"] == "hevc"] == ["0.073 bpv", "crf 16"]
    assert ("us", "HEVC (x265), near-lossless") in {(r.block, r.label) for r in t.rows}
    assert not fmt.best_marks(t)  # the record, not a ranking
    html = fmt.to_html(t)
    assert "<caption>volbench summary" in html and "kB</td>" in html and "∞" in html
    df.loc[(df["dataset"] == "us") & (df["codec"] == "siren"), ["status", "error"]] = ["failed", "out of memory"]
    t = summary_table(df, ctx())
    md = fmt.to_markdown(t)
    assert "| us | COIN (SIREN)<sup>a</sup> | 0.073 bpv | — |" in md
    assert "us / siren / target_bpp-0.073: out of memory" in md and "<sup>a</sup> failed" in md
