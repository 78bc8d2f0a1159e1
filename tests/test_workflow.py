"""End to end: the real `snakemake` command on the tiny config, and the table's values checked."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.slow


def _snake(repo_root, workdir, *args, configfile=None, timeout=1500):
    cmd = ["snakemake", "--snakefile", str(repo_root / "Snakefile"), "--directory", str(workdir), "--cores", "2",
           *args]
    if configfile:  # last: --configfile takes several values
        cmd += ["--configfile", str(configfile)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return r


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def tiny_run(repo_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("tiny")
    _snake(repo_root, work, "results/tables/summary.csv", "results/tables/environment.json",
           configfile=repo_root / "tests/configs/tiny.yaml")
    return work


def test_summary_values(tiny_run, repo_root):
    from volbench.io import read_json, read_volume
    from volbench.metrics import psnr_3d

    rows = _rows(tiny_run / "results/tables/summary.csv")
    cfg = yaml.safe_load((repo_root / "tests/configs/tiny.yaml").read_text())
    n_points = sum(len(c["rate_points"]) for c in cfg["codecs"].values())
    assert len(rows) == len(cfg["datasets"]) * n_points
    for r in rows:
        assert r["status"] == "ok", r
        d, c, p = r["dataset"], r["codec"], r["point"]
        vbc = tiny_run / f"results/encoded/{d}/{c}/{p}/volume.vbc"
        meta = read_json(tiny_run / f"results/data/{d}/meta.json")
        n = int(np.prod(meta["shape"]))
        # the size is the file the decoder reads, headers included
        assert int(r["bytes"]) == vbc.stat().st_size
        assert float(r["bpv"]) == pytest.approx(8 * vbc.stat().st_size / n)
        assert float(r["compression_ratio"]) == pytest.approx(meta["original_bytes"] / vbc.stat().st_size)
        orig = read_volume(tiny_run / f"results/data/{d}/volume.tif")
        dec = read_volume(tiny_run / f"results/decoded/{d}/{c}/{p}/volume.tif")
        assert dec.dtype == orig.dtype and dec.shape == orig.shape
        R = float(orig.max()) - float(orig.min())
        assert float(r["psnr_3d"]) == pytest.approx(psnr_3d(orig, dec, R))
        for k in ("encode_seconds", "decode_seconds", "decode_mvox_s"):
            assert float(r[k]) > 0
        if c == "zstd":
            assert r["psnr_3d"] == "inf" and r["psnr_2d"] == "inf" and r["lossless"] == "True"
            assert np.array_equal(orig, dec)
        else:
            for k in ("psnr_2d", "ssim_2d", "psnr_3d", "ssim_3d", "lpips", "psnr_fg", "ssim_fg"):
                assert math.isfinite(float(r[k])), (k, r)
            assert 0 < float(r["ssim_3d"]) < 1
        if r["target_bpp"]:
            assert abs(float(r["bpv"]) / float(r["target_bpp"]) - 1) <= 0.05
            assert r["knob"] == "rate" and float(r["knob_value"]) > 0
    md = (tiny_run / "results/tables/summary.md").read_text()
    assert "tneuron" in md and "zfp" in md
    env = json.loads((tiny_run / "results/tables/environment.json").read_text())
    assert "zfp" in json.dumps(env) and "python" in json.dumps(env).lower()


def test_every_rule_logs_and_benchmarks(tiny_run):
    assert list((tiny_run / "logs" / "encode").rglob("*.log"))
    assert list((tiny_run / "logs" / "benchmarks" / "decode").rglob("*.tsv"))


def test_decode_job_alone(tiny_run, repo_root, tmp_path):
    """A decode job reruns alone, in a fresh process, from the compressed file only."""
    cell = "results/decoded/tneuron/zfp/rate-2"
    from volbench.io import read_volume

    before = read_volume(tiny_run / cell / "volume.tif")
    shutil.rmtree(tiny_run / cell)
    r = _snake(repo_root, tiny_run, cell, configfile=repo_root / "tests/configs/tiny.yaml")
    assert re.search(r"\bdecode\s+1\b", r.stdout + r.stderr)
    assert not re.search(r"\bencode\s+\d", r.stdout + r.stderr)
    a = read_volume(tiny_run / cell / "volume.tif")
    # the same file decoded elsewhere, with nothing but the file present
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(tiny_run / "results/encoded/tneuron/zfp/rate-2/volume.vbc", lone / "x.vbc")
    subprocess.run([sys.executable, "-m", "volbench.cli", "decode-file", "x.vbc", "y.tif"], cwd=lone, check=True)
    assert np.array_equal(a, read_volume(lone / "y.tif"))
    assert np.array_equal(a, before)  # zfp: one single-threaded C decode of the same bytes


def test_local_tiff_dataset_without_code_change(repo_root, tmp_path):
    import tifffile

    from volbench.datasets.synthetic import cells

    vol = cells(shape=(9, 34, 33), seed=4)
    tifffile.imwrite(tmp_path / "mine.tif", vol)
    cfg = {
        "datasets": {"mine": {"path": str(tmp_path / "mine.tif"), "spacing": [2.0, 0.5, 0.5], "modality": "fluorescence"}},
        "codecs": {"zstd": {"rate_points": [{"level": 1}]}, "zfp": {"params": {"mode": "rate"}, "rate_points": [{"rate": 4}]}},
        "device": "cpu",
        "metrics": {"lpips": {"enabled": False}},
    }
    cf = tmp_path / "mine.yaml"
    cf.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "w"
    _snake(repo_root, work, "results/tables/summary.csv", configfile=cf)
    rows = {r["codec"]: r for r in _rows(work / "results/tables/summary.csv")}
    assert rows["zstd"]["psnr_3d"] == "inf"
    assert 20 < float(rows["zfp"]["psnr_3d"]) < 200
    meta = json.loads((work / "results/data/mine/meta.json").read_text())
    assert meta["shape"] == [9, 34, 33] and meta["spacing"] == [2.0, 0.5, 0.5]


def test_default_dry_run_lists_every_cell(repo_root, tmp_path):
    from volbench.config import point_label

    cfg = yaml.safe_load((repo_root / "config/config.yaml").read_text())
    n = len(cfg["datasets"]) * sum(len(c["rate_points"]) for c in cfg["codecs"].values())
    r = _snake(repo_root, tmp_path, "-n")
    out = r.stdout + r.stderr
    for rule in ("encode", "decode", "score"):
        assert re.search(rf"^{rule}\s+{n}\s*$", out, re.M), out[-3000:]
    for ds in cfg["datasets"]:
        for codec, entry in cfg["codecs"].items():
            for rp in entry["rate_points"]:
                assert f"results/metrics/{ds}/{codec}/{point_label(rp)}/metrics.json" in out


def test_full_config_dry_run_lists_every_cell(repo_root, tmp_path):
    """config/full.yaml (longer Gaussian schedules, a larger neuron) plans every cell."""
    cfg = yaml.safe_load((repo_root / "config/full.yaml").read_text())
    n = len(cfg["datasets"]) * sum(len(c["rate_points"]) for c in cfg["codecs"].values())
    r = _snake(repo_root, tmp_path, "-n", "--replace-workflow-config", configfile=repo_root / "config/full.yaml")
    out = r.stdout + r.stderr
    for rule in ("encode", "decode", "score"):
        assert re.search(rf"^{rule}\s+{n}\s*$", out, re.M), out[-3000:]
    assert "results/metrics/neuron_large/gaussianpile/target_ratio-18/metrics.json" in out
