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
    html = (res / "tables" / "summary.html").read_text()
    assert "<caption>volbench summary" in html and "tneuron" in html and "Zstandard (lossless)" in html
    # the tiny config has no anchor codec (hevc): BD-rate says so instead of failing
    bd = pd.read_csv(paper / "bdrate.csv")
    assert bd["bd_rate_pct"].isna().all()
    assert bd["rate_note"].str.contains("anchor hevc has no results").all()
    # GaussianPile Table 1 has the tiny config's codecs, best values in bold
    md = (paper / "gaussianpile_table1.md").read_text()
    assert "ZFP, rate 2" in md and "Zstandard (lossless)" in md and "**" in md
    assert "| Zstandard (lossless) | ∞ | 1.000 |" in md  # lossless: not ranked
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
    for needle in ("Summary", "Paper tables", "Rate-distortion", "Qualitative", "Speed", "Environment",
                   "summary.html", "gaussianpile_table1.html", "bdrate.html", "rd_psnr_2d.png", "bubble.png",
                   "environment.html"):
        assert needle in text, f"{needle!r} not in the report"
    # captions (from workflow/report/*.rst) are embedded
    assert "Bjøntegaard" in text or "Bj\\u00f8ntegaard" in text or "BD-rate" in text


def _report_data(text: str) -> tuple[dict, dict]:
    """The report's categories and results (the JSON objects its page script is built on)."""
    import json

    m = re.search(r"var categories = (\{.*?\});", text)
    j = text.index("var results = {") + len("var results = ")
    return json.loads(m.group(1)), json.JSONDecoder().raw_decode(text[j:])[0]


def test_report_has_the_summary_and_every_figure_labelled_in_reading_order(tiny_run):
    import base64

    text = (tiny_run / "results" / "report.html").read_text(encoding="utf-8")
    categories, results = _report_data(text)
    # the categories in reading order (the report sorts them by name)
    assert sorted(categories) == ["1. Summary", "2. Paper tables", "3. Rate-distortion", "4. Speed", "6. Qualitative",
                                  "7. Environment"]  # no training codec in the tiny config: no "5. Training"
    plots = tiny_run / "results" / "plots"
    figures = {str(p.relative_to(tiny_run)) for p in plots.rglob("*.png")}
    assert len(figures) == 1 + 2 * (1 + 4 + 2)  # bubble; per dataset rd, rd_* x 4, qualitative, error maps
    tables = {f"results/tables/paper/{p.name}" for p in (tiny_run / "results" / "tables" / "paper").glob("*.html")}
    want = figures | tables | {"results/tables/summary.html", "results/tables/summary.csv"}
    assert set(results) == want  # every figure, every table and the summary, nothing else
    in_cats = {p for subcats in categories.values() for paths in subcats.values() for p in paths}
    assert in_cats == want
    assert set(categories["1. Summary"]["Other"]) == {"results/tables/summary.html", "results/tables/summary.csv"}
    summary = results["results/tables/summary.html"]
    html = base64.b64decode(summary["data_uri"].split("base64,", 1)[1]).decode()
    assert "<caption>volbench summary" in html and "<td>tneuron</td>" in html
    for path, r in results.items():
        # a label, not a bare file path; a readable caption; no JSON dump of the config in the job's parameters
        assert r["labels"] and all(v and not re.search(r"^results/|\\.(png|html|csv)$", str(v))
                                   for v in r["labels"].values()), (path, r["labels"])
        assert r["caption"].strip() and "{&quot;" not in r["caption"] and '{"' not in r["caption"], path
        assert '\\"datasets\\"' not in r["job_properties"]["params"] and "datasets" not in r["job_properties"]["params"], path
    assert results["results/tables/paper/gaussianpile_table1.html"]["labels"] == {
        "table": "GaussianPile Table 1", "shows": "2D PSNR, SSIM and encode (training) time per dataset"}
    assert results["results/plots/tus/rd_psnr_2d.png"]["labels"] == {"dataset": "tus", "figure": "2D PSNR"}
