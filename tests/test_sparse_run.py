"""Sparse slices (issue 19): the fit job (a child process reading the training folder alone, a
failure recorded), the held-out metrics, the table and the figure."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest

from volbench import io, metrics
from volbench.sparse import figure, run, score, split, table


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    from volbench.datasets.synthetic import cells

    root = tmp_path_factory.mktemp("sparse_run")
    vol = cells(shape=(12, 40, 36), seed=5)
    io.write_volume(root / "volume.tif", vol)
    io.write_json(root / "meta.json", {"spacing": [1.0, 0.5, 0.5], "sigma_z": 1.0, "modality": "confocal"})
    split.write_split(root / "volume.tif", root / "meta.json", "c", 0.5, 0, root / "input")
    return root, vol


def _fit(cwd, *args):
    return subprocess.run([sys.executable, "-m", "volbench.cli", "sparse-fit", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_fit_job_needs_nothing_but_the_training_folder(ds, tmp_path):
    """The job runs where the training folder is the only file there is (no volume, no meta.json)."""
    root, vol = ds
    shutil.copytree(root / "input", tmp_path / "input")
    r = _fit(tmp_path, "--train-dir", "input", "--method-type", "linear", "--name", "lin", "--out-dir", "out")
    assert r.returncode == 0, r.stderr
    rec = io.read_json(tmp_path / "out" / run.FIT_JSON)
    assert rec["status"] == "ok" and rec["method"] == "lin" and rec["display_name"] == "Linear (z)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input", "out"]
    pred = io.read_volume(tmp_path / "out" / run.PREDICTION)
    tz = rec["split"]["test_z"]
    assert pred.shape == (len(tz), *vol.shape[1:]) and pred.dtype == vol.dtype
    assert metrics.psnr_3d(vol[tz], pred, float(vol.max() - vol.min())) > 20


def test_a_failing_method_is_recorded_not_raised(ds, tmp_path):
    root, _ = ds
    shutil.copytree(root / "input", tmp_path / "input")
    io.write_volume(tmp_path / "input" / split.TRAIN_TIF, np.zeros((2, 3, 3), np.uint16))  # a damaged split
    r = _fit(tmp_path, "--train-dir", "input", "--method-type", "siren", "--name", "s", "--out-dir", "out")
    assert r.returncode == 0, r.stderr  # contained: the workflow goes on
    rec = io.read_json(tmp_path / "out" / run.FIT_JSON)
    assert rec["status"] == "failed" and "does not match" in rec["error"] and rec["display_name"] == "SIREN"
    assert not (tmp_path / "out" / run.PREDICTION).exists()
    r = _fit(tmp_path, "--train-dir", "input", "--method-type", "siren", "--out-dir", "out2", "--on-failure", "raise")
    assert r.returncode == 1 and "volbench: error: sparse fit failed" in r.stderr
    # the scores keep the failed method with its reason
    s = score.score_split(root / "volume.tif", root / "input", {"s": tmp_path / "out"}, lpips_cfg={"enabled": False})
    assert s["methods"]["s"]["status"] == "failed" and "does not match" in s["methods"]["s"]["error"]


def test_a_killed_method_is_recorded(ds, tmp_path, monkeypatch):
    """A child that dies from a signal (out of memory) becomes a failed record too."""
    from volbench import pipeline

    real = subprocess.Popen

    def popen(cmd, *a, **kw):  # the child kills itself before it does anything
        return real([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"], *a, **kw)

    monkeypatch.setattr(pipeline.subprocess, "Popen", popen)
    from volbench.cli import main

    assert main(["sparse-fit", "--train-dir", str(ds[0] / "input"), "--method-type", "cubic",
                 "--out-dir", str(tmp_path / "out")]) == 0
    rec = io.read_json(tmp_path / "out" / run.FIT_JSON)
    assert rec["status"] == "failed" and "SIGKILL" in rec["error"] and rec["method_type"] == "cubic"


def test_scores_are_per_held_out_slice_mean_and_std(ds, tmp_path):
    root, vol = ds
    for kind in ("nearest", "cubic"):
        io.write_json(tmp_path / kind / run.FIT_JSON,
                      run.fit_cell(root / "input", kind, {}, tmp_path / kind, name=kind, device="cpu"))
    s = score.score_split(root / "volume.tif", root / "input", {"nearest": tmp_path / "nearest",
                                                                 "cubic": tmp_path / "cubic"},
                          lpips_cfg={"enabled": True, "seed": 0})
    R = float(vol.max()) - float(vol.min())
    pred = run.read_prediction(tmp_path / "nearest")
    tz = s["test_z"]
    want = [metrics.psnr_from_mse(float(np.mean((vol[z].astype(float) - pred[i]) ** 2)), R) for i, z in enumerate(tz)]
    m = s["methods"]["nearest"]
    np.testing.assert_allclose(m["psnr"], want)
    assert m["psnr_mean"] == pytest.approx(np.mean(want)) and m["psnr_std"] == pytest.approx(np.std(want))
    assert m["ssim"][0] == pytest.approx(metrics.ssim(vol[tz[0]], pred[0], R))
    assert len(m["lpips"]) == len(tz) and all(0 <= v < 1 for v in m["lpips"])
    assert s["data_range"] == R and s["method_order"] == ["nearest", "cubic"]
    # the table: seed 004 Table 1's layout, each method against cubic on the same split
    io.write_json(tmp_path / "scores.json", s)
    rows = table.write_table([tmp_path / "scores.json"], tmp_path / "t")
    mine = {r["method"]: r for r in rows if r["source"] == "volbench"}
    assert mine["nearest"]["psnr_minus_cubic"] == pytest.approx(m["psnr_mean"] - s["methods"]["cubic"]["psnr_mean"])
    md = (tmp_path / "t.md").read_text()
    assert "| 50 % axial slices (6 of 12) | Nearest slice |" in md and "SSIM (↑)" in md
    assert f"{m['psnr_mean']:.2f} ± {m['psnr_std']:.2f}" in md
    assert (tmp_path / "t.html").read_text().count("<table") == 1 and (tmp_path / "t.csv").exists()
    # the figure: the hardest held-out slice per fraction
    assert figure.hardest_slice([0, 5, 11], [1, 2, 3, 4, 6, 7, 8, 9, 10], 12) == 8
    out = figure.draw(root / "volume.tif", [tmp_path / "scores.json"],
                      {"0.5": {"nearest": tmp_path / "nearest", "cubic": tmp_path / "cubic"}}, tmp_path / "fig")
    assert all(p.stat().st_size > 1000 for p in out)


def test_published_values_sit_beside_ours(tmp_path):
    from volbench.paper import published

    if not published.CSV_PATH.exists():
        pytest.skip("no published.csv (the evaluation issue's reference values)")
    pub = table.published_rows()
    got = {(p["fraction"], p["method"]): p for p in pub}
    assert set(got) == {(f, m) for f in (0.25, 0.5, 0.95) for m in ("InnerGS", "Ours")}
    ours50 = got[(0.5, "Ours")]
    got50 = (ours50["psnr_mean"], ours50["psnr_std"], ours50["ssim_mean"], ours50["lpips_std"])
    assert got50 == (41.44, 2.83, 0.9947, 0.0131)
    s = {"dataset": "d", "fraction": 0.5, "n_train": 2, "n_test": 1, "depth": 3, "method_order": ["cubic"],
         "methods": {"cubic": {"status": "ok", "method_type": "cubic", "display_name": "Cubic (z)",
                               "psnr_mean": 30.0, "psnr_std": 0.0, "ssim_mean": 0.9, "ssim_std": 0.0,
                               "lpips_mean": 0.1, "lpips_std": 0.0}}}
    io.write_json(tmp_path / "s.json", s)
    table.write_table([tmp_path / "s.json"], tmp_path / "t")
    md = (tmp_path / "t.md").read_text()
    assert "*Tri-plane 3DGS (seed 004), published* | 0.9947 ± 0.0034 | 41.44 ± 2.83 | 0.0255 ± 0.0131" in md
    assert "InnerGS (seed 004), published" in md and "25 %" not in md  # only the fractions we ran
    assert not math.isnan(float(next(r for r in table.rows_from_scores([tmp_path / "s.json"]))["psnr_mean"]))
    assert json.loads(json.dumps(pub))  # plain values
