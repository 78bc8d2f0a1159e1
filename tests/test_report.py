"""End to end: the tiny config runs through the whole DAG (tables, figures), then
`snakemake --report` builds one self-contained HTML report of it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def _snakemake() -> str:
    exe = shutil.which("snakemake") or str(Path(sys.executable).with_name("snakemake"))
    if not Path(exe).exists() and not shutil.which(exe):
        pytest.skip("snakemake is not installed")
    return exe


def _run(cmd: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, repo_root):
    work = tmp_path_factory.mktemp("tiny")
    base = [_snakemake(), "--snakefile", str(repo_root / "Snakefile"), "--directory", str(work),
            "--configfile", str(repo_root / "tests" / "configs" / "tiny.yaml")]
    _run(base + ["--cores", "2"], work)
    _run(base + ["--report", str(work / "results" / "report.html")], work)
    return work


def test_dag_ends_with_tables_figures(tiny_run, repo_root):
    res = tiny_run / "results"
    paper = res / "tables" / "paper"
    sys.path.insert(0, str(repo_root / "workflow"))
    from volbench.paper.tables import GENERATORS

    for name in list(GENERATORS) + ["bdrate"]:
        for ext in ("csv", "md", "tex", "html"):
            assert (paper / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext} missing"
    for ds in ("tneuron", "tus"):
        for stem in ("rd_psnr_2d", "rd_psnr_3d", "rd_ssim_3d", "rd_lpips", "qualitative", "error_maps"):
            for ext in ("png", "pdf"):
                assert (res / "plots" / ds / f"{stem}.{ext}").stat().st_size > 1000
        # no training codec in the tiny config: no training-dynamics figure is planned
        assert not (res / "plots" / ds / "training_dynamics.png").exists()
    assert (res / "plots" / "bubble.png").exists() and (res / "plots" / "bubble.pdf").exists()
    # the tiny config has no anchor codec (hevc): BD-rate says so instead of failing
    bd = pd.read_csv(paper / "bdrate.csv")
    assert bd["bd_rate_pct"].isna().all()
    assert bd["rate_note"].str.contains("anchor hevc has no results").all()
    # GaussianPile Table 1 has the tiny config's codecs, best values in bold
    md = (paper / "gaussianpile_table1.md").read_text()
    assert "ZFP" in md and "Zstandard (lossless)" in md and "**" in md
    summary = pd.read_csv(res / "tables" / "summary.csv")
    assert set(summary["dataset"]) == {"tneuron", "tus"}


def test_report_is_one_self_contained_html(tiny_run):
    report = tiny_run / "results" / "report.html"
    text = report.read_text(encoding="utf-8", errors="replace")
    assert report.stat().st_size > 50_000
    assert "<html" in text.lower()
    # self-contained: no local file references and no external stylesheets/scripts
    assert not re.search(r"""(src|href)=["'](file:|/|\.\./)""", text)
    # every category of the paper outputs and the environment record is in it
    for needle in ("Paper tables", "Rate-distortion (paper)", "Qualitative", "Speed", "Environment",
                   "gaussianpile_table1.html", "bdrate.html", "rd_psnr_2d.png", "bubble.png", "environment.html"):
        assert needle in text, f"{needle!r} not in the report"
    # captions (from workflow/report/*.rst) are embedded
    assert "Bjøntegaard" in text or "Bj\\u00f8ntegaard" in text or "BD-rate" in text
