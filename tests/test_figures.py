"""Paper figures from a hand-made summary and a tiny results tree written by the fixture."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib
import matplotlib.image as mpimg
import matplotlib.text
import numpy as np
import pandas as pd
import pytest
import tifffile

from volbench import cli
from volbench.codecs.base import get_codec
from volbench.paper import figures as F
from volbench.paper import selection, style

SHAPE = (6, 24, 32)


def _original():
    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    vol = 200 + 20 * rng.standard_normal(SHAPE)
    vol += 3000 * np.exp(-((y - 12) ** 2 + (x - 16) ** 2) / 30.0) * (z == 4)  # slice 4 holds the structure
    return np.clip(vol, 0, 65535).astype(np.uint16)


@pytest.fixture
def tree(tmp_path):
    """results/{data,decoded,encoded} for one dataset, two codecs, and the matching summary rows."""
    res = tmp_path / "results"
    orig = _original()
    (res / "data" / "ds").mkdir(parents=True)
    tifffile.imwrite(res / "data" / "ds" / "volume.tif", orig)
    rng = np.random.default_rng(1)
    rows = []
    cells = [("hevc", "hevc", "crf-16", 1.2, 3.0), ("hevc", "hevc", "crf-28", 0.08, 40.0),
             ("hevc", "hevc", "crf-40", 0.01, 200.0), ("volmicro", "volmicro", "target_bpp-0.073", 0.073, 25.0)]
    for codec, ctype, point, bpv, noise in cells:
        rec = np.clip(orig + noise * rng.standard_normal(SHAPE), 0, 65535).astype(np.uint16)
        d = res / "decoded" / "ds" / codec / point
        d.mkdir(parents=True)
        tifffile.imwrite(d / "volume.tif", rec)
        mse = float(np.mean((orig.astype(float) - rec) ** 2))
        rng_ = float(orig.max()) - float(orig.min())
        psnr = 10 * np.log10(rng_ ** 2 / mse)
        rows.append({"dataset": "ds", "codec": codec, "codec_type": ctype, "point": point, "bpv": bpv,
                     "psnr_2d": psnr, "psnr_3d": psnr - 0.5, "ssim_3d": 0.9 - noise / 1000, "lpips": np.nan,
                     "encode_seconds": 2.0 if ctype == "hevc" else 300.0, "decode_seconds": 0.1,
                     "decode_mvox_s": 50.0 if ctype == "hevc" else 5.0, "status": "ok", "params": json.dumps({}),
                     "target_bpp": 0.073 if "target" in point else np.nan, **get_codec(ctype).describe()})
    rows.append({"dataset": "ds", "codec": "zstd", "codec_type": "zstd", "point": "level-19", "bpv": 9.0,
                 "psnr_2d": np.inf, "psnr_3d": np.inf, "ssim_3d": 1.0, "lpips": 0.0, "encode_seconds": 0.1,
                 "decode_seconds": 0.05, "decode_mvox_s": 100.0, "status": "ok", "params": "{}",
                 **get_codec("zstd").describe()})
    enc = res / "encoded" / "ds" / "volmicro" / "target_bpp-0.073"
    enc.mkdir(parents=True)
    it = np.arange(0, 1000, 50)
    pd.DataFrame({"iteration": it, "loss": 1.0 / (1 + it), "psnr": 20 + 10 * (1 - np.exp(-it / 300)),
                  "mse": 0.01 / (1 + it), "n_gaussians": np.minimum(400 + it, 900), "seconds": it / 10}).to_csv(
        enc / "history.csv", index=False)
    siren = res / "encoded" / "ds" / "siren" / "target_bpp-0.073"
    siren.mkdir(parents=True)
    pd.DataFrame({"iteration": it, "loss": 2.0 / (1 + it), "psnr": 18 + 0.01 * it, "mse": 0.5 / (1 + it),
                  "n_gaussians": None, "seconds": it / 5, "stage": "train"}).to_csv(siren / "history.csv", index=False)
    return res, selection.prepare(pd.DataFrame(rows))


def _png(path):
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert float(img[..., :3].std()) > 0.01  # not a blank canvas
    return img


def test_rd_curves_every_metric(tree, tmp_path):
    res, df = tree
    paths = F.rd_curves(df, "ds", tmp_path / "plots")
    names = sorted(p.name for p in paths)
    assert names == sorted(f"rd_{m}.{e}" for m in F.RD_METRICS for e in ("png", "pdf"))
    for p in paths:
        assert p.stat().st_size > 1000
        if p.suffix == ".png":
            _png(p)
    assert (tmp_path / "plots" / "rd_lpips.pdf").read_bytes()[:4] == b"%PDF"


def test_bubble_chart(tree, tmp_path):
    _, df = tree
    paths = F.bubble_chart(df, tmp_path / "bubble")
    assert [p.name for p in paths] == ["bubble.png", "bubble.pdf"]
    _png(paths[0])


def test_training_dynamics_reads_history_files(tree, tmp_path):
    res, df = tree
    hist = F.find_histories(res, "ds")
    assert [(c, p) for c, p, _ in hist] == [("siren", "target_bpp-0.073"), ("volmicro", "target_bpp-0.073")]
    paths = F.training_dynamics(res, "ds", tmp_path / "train", df)
    _png(paths[0])
    # a dataset without any history still gives a figure (saying so)
    paths = F.training_dynamics(res, "nothing", tmp_path / "empty")
    assert paths[0].exists()


def test_nearest_points_and_slice_choice(tree):
    res, df = tree
    near = {r["codec"]: r["point"] for r in F.nearest_points(df, "ds", 0.073)}
    assert near == {"hevc": "crf-28", "volmicro": "target_bpp-0.073", "zstd": "level-19"}
    assert F.pick_slice(_original()) == 4
    a = np.zeros((4, 4))
    assert F._slice_psnr(a, a, 10.0) == np.inf
    assert F._slice_psnr(a, a + 1, 10.0) == pytest.approx(20.0)


def test_qualitative_panels_and_error_maps(tree, tmp_path):
    res, df = tree
    paths = F.qualitative(df, res, "ds", tmp_path / "qual", tmp_path / "err", bpv=0.073)
    assert sorted(p.name for p in paths) == ["err.pdf", "err.png", "qual.pdf", "qual.png"]
    q = _png(tmp_path / "qual.png")
    e = _png(tmp_path / "err.png")
    assert q.shape[1] > e.shape[1] * 0.8  # 4 columns (original + 3 codecs) in the panel figure


def test_qualitative_tolerates_a_missing_decoded_volume(tree, tmp_path):
    res, df = tree
    (res / "decoded" / "ds" / "volmicro" / "target_bpp-0.073" / "volume.tif").unlink()
    paths = F.qualitative(df, res, "ds", tmp_path / "qual", tmp_path / "err", bpv=0.073)
    assert all(p.exists() for p in paths)


def test_cli_figures(tree, tmp_path):
    res, df = tree
    s = tmp_path / "summary.csv"
    df.drop(columns=["_params", "size_mb"]).to_csv(s, index=False)
    out = tmp_path / "plots"
    assert cli.main(["figures", "bubble", "--summary", str(s), "--out", str(out / "bubble")]) == 0
    assert (out / "bubble.png").exists() and (out / "bubble.pdf").exists()
    assert cli.main(["figures", "qualitative", "--summary", str(s), "--results", str(res), "--dataset", "ds",
                     "--out", str(out / "q.png"), "--out-errors", str(out / "e")]) == 0
    assert (out / "q.png").exists() and (out / "q.pdf").exists() and (out / "e.pdf").exists()
    assert cli.main(["figures", "qualitative", "--summary", str(s), "--dataset", "ds", "--out", str(out)]) == 1
    assert not list(out.glob(".*tmp*"))


def test_styles_hue_from_family_and_one_look_per_instance(tree):
    _, df = tree
    extra = df.iloc[[0]].assign(codec="hevc_lossless", point="lossless")  # a 2nd instance of hevc's family
    look = style.styles(selection.prepare(pd.concat([df, extra], ignore_index=True)))
    assert look["hevc"].label == "HEVC (x265)" and look["hevc_lossless"].label == "HEVC (x265), lossless"
    # one family, one hue (the first instance has it exactly), the others differ by marker, line, lightness
    blue = matplotlib.colormaps["tab10"](style.FAMILY_HUES["video"])[:3]
    assert look["hevc"].color == pytest.approx(blue)
    assert look["hevc_lossless"].color != look["hevc"].color
    assert look["hevc_lossless"].marker != look["hevc"].marker
    assert look["hevc_lossless"].linestyle != look["hevc"].linestyle
    # every instance its own look; a family without a listed hue still gets a fixed one
    assert len({(s.color, s.marker, s.linestyle) for s in look.values()}) == len(look)
    assert style.styles(df)["volmicro"] == look["volmicro"]  # deterministic, whatever else is there
    assert style.styles(None, ["mine"])["mine"] == style.styles(None, ["mine"])["mine"]


def test_rd_lines_use_the_instance_styles(tree, tmp_path, drawn_lines):
    _, df = tree
    F.rd_curves(df, "ds", tmp_path, metrics=("psnr_2d",))
    look = style.styles(df)
    assert drawn_lines["HEVC (x265)"] == (look["hevc"].color, look["hevc"].marker)
    assert drawn_lines["VolMicro"] == (look["volmicro"].color, look["volmicro"].marker)


# ----------------------------------------------------------------------------------------------
# one style per codec instance, in every panel and figure (the figure objects, before saving)
@pytest.fixture
def figs(monkeypatch):
    """The figures volbench.paper.figures draws while active, by file stem (nothing written)."""
    import matplotlib.pyplot as plt

    drawn: dict[str, object] = {}

    def keep(fig, base, formats=("png", "pdf")):
        fig.canvas.draw()
        drawn[Path(base).name] = fig
        return []

    monkeypatch.setattr(F, "save_figure", keep)
    yield drawn
    for fig in drawn.values():
        plt.close(fig)


#: every codec type of the default config, with its instances (the lossless ones and GaussianPile's
#: noquant variant): (instance, codec type, rate points as (point, bpv, psnr offset))
DEFAULT_LIKE = [
    ("zstd", "zstd", [("level-19", 11.0, None)]),
    ("zfp", "zfp", [("rate-1", 1.0, 35.0), ("rate-2", 2.0, 41.0), ("rate-4", 4.0, 51.0)]),
    ("zfp_lossless", "zfp", [("mode-reversible", 12.0, None)]),
    ("hevc", "hevc", [("crf-34", 0.1, 32.0), ("crf-22", 0.3, 40.0), ("target_bpp-0.073", 0.075, 30.0)]),
    ("hevc_lossless", "hevc", [("lossless", 8.0, 82.6)]),  # near-lossless on 16-bit data, lossless on 8-bit
    ("jpeg2000", "jpeg2000", [("ratio-40", 0.3, 33.0), ("ratio-10", 1.5, 48.0)]),
    ("jpeg2000_lossless", "jpeg2000", [("lossless", 9.8, None)]),
    ("siren", "siren", [("width-16", 0.04, 21.0), ("width-32", 0.13, 24.0)]),
    ("volmicro", "volmicro", [("target_bpp-0.073", 0.073, 28.0)]),
    ("gaussianpile", "gaussianpile", [("target_ratio-18", 0.88, 40.0)]),
    ("gaussianpile_noquant", "gaussianpile", [("target_ratio-18", 2.5, 40.5)]),
    ("gs3d_slice", "gs3d_slice", [("own", 4.8, 25.0), ("target_ratio-18", 0.72, 27.0)]),
]


def _default_like(res=None):
    """A summary of every default codec on two datasets ("a": 16-bit, "b": 8-bit where hevc_lossless is
    lossless); with `res`, the decoded volumes of dataset "a" too (the lossless ones equal the original)."""
    rows = []
    for ds in ("a", "b"):
        for codec, ctype, points in DEFAULT_LIKE:
            for point, bpv, psnr in points:
                lossless = psnr is None or (codec == "hevc_lossless" and ds == "b")
                p2 = np.inf if lossless else psnr + (1.0 if ds == "b" else 0.0)
                rows.append({"dataset": ds, "codec": codec, "codec_type": ctype, "point": point, "bpv": bpv,
                             "psnr_2d": p2, "psnr_3d": p2, "ssim_3d": 1.0 if lossless else 0.5 + psnr / 200,
                             "lpips": 0.0 if lossless else 0.5 - psnr / 200, "lossless": lossless,
                             "encode_seconds": 0.003 if ctype == "zfp" else 30.0 if ctype in ("gaussianpile", "volmicro")
                             else 1.0, "decode_seconds": 0.1, "decode_mvox_s": 5.0 + bpv, "status": "ok",
                             "params": json.dumps({"lossless": True} if "lossless" in codec else {}),
                             "target_bpp": 0.073 if "target_bpp" in point else np.nan, **get_codec(ctype).describe()})
    df = selection.prepare(pd.DataFrame(rows))
    if res is not None:
        orig = _original()
        (res / "data" / "a").mkdir(parents=True)
        tifffile.imwrite(res / "data" / "a" / "volume.tif", orig)
        rng = np.random.default_rng(2)
        for r in F.nearest_points(df, "a", 0.073):
            d = res / "decoded" / "a" / r["codec"] / r["point"]
            d.mkdir(parents=True)
            exact = not np.isfinite(r["psnr_2d"])
            rec = orig if exact else np.clip(orig + 30 * rng.standard_normal(SHAPE), 0, 65535).astype(np.uint16)
            tifffile.imwrite(d / "volume.tif", rec)
    return df


def _codec_colors(fig) -> dict[str, set]:
    """{codec instance: the colours of every artist drawn for it} in all axes of a figure."""
    out: dict[str, set] = {}
    for ax in fig.axes:
        for a in list(ax.get_lines()) + list(ax.collections):
            if a.get_gid():
                col = a.get_color() if hasattr(a, "get_xdata") else a.get_facecolor()[0]
                out.setdefault(a.get_gid(), set()).add(tuple(round(float(c), 4) for c in matplotlib.colors.to_rgb(col)))
    return out


def test_every_instance_has_its_own_style():
    df = _default_like()
    look = style.styles(df)
    assert len(look) == len(DEFAULT_LIKE)
    assert len({s.color for s in look.values()}) == len(look)  # a colour of its own: no cycle wraps
    assert look["zstd"].color != look["gaussianpile"].color
    assert look["gaussianpile"].marker != look["gaussianpile_noquant"].marker
    # the family gives the hue: the instances of one family are shades of it
    hue = {c: matplotlib.colors.rgb_to_hsv(s.color)[0] for c, s in look.items()}
    assert abs(hue["hevc"] - hue["hevc_lossless"]) < 0.05 and abs(hue["hevc"] - hue["jpeg2000"]) > 0.1
    # one label scheme: a lossless mode is named by what it achieved (here: lossless on one dataset only)
    assert look["hevc_lossless"].label == "HEVC (x265), lossless mode"
    assert look["gaussianpile_noquant"].label == "GaussianPile, noquant"


def test_one_style_per_codec_in_every_panel_and_figure(figs, tmp_path):
    from volbench.summary import plot_rd

    res = tmp_path / "results"
    df = _default_like(res)
    look = style.styles(df)
    s = tmp_path / "summary.csv"
    df.drop(columns=["_params", "size_mb"]).to_csv(s, index=False)
    for ds in ("a", "b"):
        plot_rd(s, ds, tmp_path / f"rd_{ds}.png")  # the overview (results/plots/{dataset}/rd.png)
        F.rd_curves(df, ds, tmp_path / ds)
    F.bubble_chart(df, tmp_path / "bubble")
    drawn_somewhere = set()
    for name, fig in figs.items():
        cols = _codec_colors(fig)
        assert cols, name
        for codec, c in cols.items():
            want = tuple(round(x, 4) for x in look[codec].color)
            assert c == {want}, (name, codec, c, want)  # the same colour in every panel and figure
            drawn_somewhere.add(codec)
    assert drawn_somewhere == set(look)
    # zfp_lossless (PSNR all infinite) is a dotted line in the PSNR panels, markers in SSIM: one colour
    ov = figs["rd_a"]
    assert {a.get_gid() for a in ov.axes[0].get_lines()} >= {"zfp_lossless", "zstd"}
    assert {a.get_gid() for a in ov.axes[2].get_lines()} >= {"zfp_lossless", "zstd"}


def test_one_legend_outside_the_axes_listing_every_codec_drawn(figs, tmp_path):
    df = _default_like()
    F.rd_overview(df, "a", tmp_path / "rd.png")
    F.rd_curves(df, "a", tmp_path, metrics=("psnr_2d",))
    F.bubble_chart(df, tmp_path / "bubble")
    for name, fig in figs.items():
        legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        assert len(legends) == 1, name
        leg = legends[0]
        drawn = {a.get_gid() for ax in fig.axes for a in list(ax.get_lines()) + list(ax.collections) if a.get_gid()}
        texts = [t.get_text() for t in leg.get_texts()]
        assert len(texts) == len(drawn) == len(set(texts)), (name, texts, drawn)
        box = leg.get_window_extent()
        for ax in fig.axes:
            a = ax.get_window_extent()
            assert box.x0 >= a.x1 - 1 or box.x1 <= a.x0 + 1 or box.y0 >= a.y1 - 1 or box.y1 <= a.y0 + 1, name
    # per dataset, a lossless mode says what it is there; a codec without finite PSNR says lossless
    texts = [t.get_text() for t in figs["rd_psnr_2d"].axes[0].get_legend().get_texts()]
    assert "HEVC (x265), near-lossless" in texts and "ZFP, lossless" in texts and "Zstandard (lossless)" in texts


def test_bubble_labels_do_not_overlap_and_partial_means_are_marked(figs, tmp_path):
    df = _default_like()
    F.bubble_chart(df, tmp_path / "bubble")
    fig = figs["bubble"]
    ax = fig.axes[0]
    boxes = [matplotlib.text.Text.get_window_extent(t) for t in ax.texts if t.get_text()[:1].isdigit()]
    assert len(boxes) == sum(len(p) for c, _, p in DEFAULT_LIKE if c not in ("zstd", "zfp_lossless",
                                                                           "jpeg2000_lossless"))
    for i, a in enumerate(boxes):
        assert all(not a.overlaps(b) for b in boxes[i + 1:])
        assert ax.get_window_extent().contains(a.x0, a.y0) and ax.get_window_extent().contains(a.x1, a.y1)
    labels = [t.get_text() for t in ax.texts]
    # the time as the tables write it (ms / s), not "minutes"; hevc_lossless is lossless on "b":
    # its circle is the mean of "a" alone, marked, and the note says why
    assert "3ms" in labels and "1.0s" in labels and "1.0s*" in labels
    note = [t for t in labels if t.startswith("* ")]
    assert len(note) == 1 and note[0].startswith("* HEVC (x265), lossless mode: mean without b (lossless, PSNR = ∞)\n")
    shown = note[0].split("\n")[1]
    assert shown.startswith("Not shown (lossless on every dataset, PSNR = ∞): ")
    assert set(shown.split(": ", 1)[1].split("; ")) == {"Zstandard (lossless)", "ZFP, lossless",
                                                        "JPEG2000 (slice-wise), lossless"}
    assert "minutes" not in ax.get_title()


def test_place_labels_keeps_crowded_labels_apart():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    xy = [(1.0 + 0.01 * i, 1.0 + 0.01 * (i % 3)) for i in range(12)]  # a tight cluster
    ax.set_xlim(0, 3)
    ax.set_ylim(0, 3)
    anns = F.place_labels(ax, xy, [f"{i}.0s" for i in range(12)], [4.0] * 12)
    fig.canvas.draw()
    boxes = [matplotlib.text.Text.get_window_extent(a) for a in anns]  # the texts, not their leader lines
    assert all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)


def test_training_dynamics_decoded_psnr_identical_runs_and_missing_quantities(figs, tree, tmp_path):
    res, df = tree
    enc = res / "encoded" / "ds" / "volmicro" / "target_bpp-0.073"
    h = pd.read_csv(enc / "history.csv")
    h.loc[5, "psnr"] = 99.0  # a noisy batch: the dashed line must not be its maximum
    final = pd.DataFrame([{"iteration": 1000, "loss": np.nan, "psnr": 19.2, "mse": 0.012, "n_gaussians": 900,
                           "seconds": 100.0, "stage": "decoded_file"}])
    pd.concat([h, final]).to_csv(enc / "history.csv", index=False)
    twin = res / "encoded" / "ds" / "siren" / "width-16"  # the same run as siren's target point
    twin.mkdir(parents=True)
    (twin / "history.csv").write_text((res / "encoded" / "ds" / "siren" / "target_bpp-0.073" / "history.csv").read_text())
    F.training_dynamics(res, "ds", tmp_path / "train", df)
    fig = figs["train"]
    psnr_ax, n_ax = fig.axes[1], fig.axes[3]
    dashed = [ln.get_ydata()[0] for ln in psnr_ax.get_lines() if ln.get_linestyle() == "--"]
    assert dashed == [pytest.approx(19.2)]  # the decoded file's PSNR, not max(batch PSNR) = 99
    # the decoded-file row is not part of the training curve
    vm = [ln for ln in psnr_ax.get_lines() if ln.get_gid() == "volmicro" and ln.get_linestyle() != "--"]
    assert len(vm) == 1 and 1000 not in list(vm[0].get_xdata())
    # identical runs drawn once, labelled with both points
    labels = [t.get_text() for t in fig.legends[0].get_texts()]  # (siren has no summary row: its own name)
    assert [t for t in labels if t.startswith("siren")] == ["siren, 0.073 bpv = width 16 (identical runs)"]
    assert n_ax.get_title().endswith("\nnot logged by siren")
    # colours follow the family: SIREN's neural hue, VolMicro's Gaussian one
    look = style.styles(df, extra=["siren"])
    assert {ln.get_color() for ln in psnr_ax.get_lines() if ln.get_gid() == "volmicro" and ln.get_linestyle() != "--"} \
        == {F.point_color(look["volmicro"].color, 0)}


def test_qualitative_grids_at_most_five_columns_and_collapse_lossless(figs, tmp_path):
    res = tmp_path / "results"
    df = _default_like(res)
    F.qualitative(df, res, "a", tmp_path / "qual", tmp_path / "err", bpv=0.073)
    q, e = figs["qual"], figs["err"]
    for fig in (q, e):
        assert fig.get_size_inches()[0] * 150 <= 2400  # savefig.dpi 150
        lefts = {round(ax.get_position().x0, 3) for ax in fig.axes if ax.images}
        assert len(lefts) <= 5
    titles = [ax.get_title() for ax in q.axes if ax.get_title()]
    assert not any("Zstandard" in t or "ZFP, lossless" in t for t in titles)  # collapsed into one note
    notes = [t.get_text() for t in q.texts if t.get_text().startswith("Lossless")]
    assert len(notes) == 1 and notes[0].startswith("Lossless (decoded volume identical to the original, not shown): ")
    assert set(notes[0].split(": ", 1)[1].rstrip(".").split("; ")) == {
        "Zstandard (lossless)", "ZFP, lossless", "JPEG2000 (slice-wise), lossless"}
    assert "HEVC (x265), near-lossless\n8 bpv" in titles  # not exact: drawn, and named for what it is
    errs = [ax.get_title() for ax in e.axes if ax.images and ax.get_title()]
    assert errs and all(re.search(r"\nMAE [0-9][0-9,]*(\.[0-9]+)? grey levels$", t) for t in errs), errs
    assert not any("e+" in t for t in errs)
