"""Paper figures from a hand-made summary and a tiny results tree written by the fixture."""

from __future__ import annotations

import json

import matplotlib
import matplotlib.image as mpimg
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
    assert look["hevc"].label == "HEVC (x265)" and look["hevc_lossless"].label == "HEVC (x265) [hevc_lossless]"
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
