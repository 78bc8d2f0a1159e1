"""A codec added from outside volbench: one module (tests/toy_codec.py) and one config entry
(`module: toy_codec`), no other edit. The real `snakemake` runs the whole DAG; the codec then
appears in the summary, in the paper tables under its display name, and in the figures with a look
of its own (the hue of its family, which no volbench codec has), and its training history gives
the training-dynamics figure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
NAME = "Toy codec (test)"
CONFIG = """\
seed: 0
device: cpu
anchor: zfp
metrics:
  lpips: {enabled: false}
datasets:
  vol:
    synthetic: {generator: cells, shape: [8, 32, 28], seed: 4}
    modality: confocal
codecs:
  toy:
    codec: toy
    module: toy_codec
    rate_points:
      - {bits: 4}
      - {bits: 8}
  zfp:
    params: {mode: rate}
    rate_points: [{rate: 2}, {rate: 6}]
  zstd:
    rate_points: [{level: 1}]
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory, repo_root):
    work = tmp_path_factory.mktemp("module_codec")
    cfg = work / "toy.yaml"
    cfg.write_text(CONFIG)
    exe = Path(sys.executable).with_name("snakemake")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           # the codec module; the rules put workflow/ in front of it
           "PYTHONPATH": os.pathsep.join(p for p in [str(TESTS), os.environ.get("PYTHONPATH", "")] if p)}
    cmd = [str(exe) if exe.exists() else "snakemake", "--snakefile", str(repo_root / "Snakefile"), "--directory",
           str(work), "--cores", "2", "--configfile", str(cfg)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return work / "results"


def test_nothing_in_volbench_names_the_codec(repo_root):
    for p in list((repo_root / "workflow").rglob("*.py")) + list((repo_root / "workflow").rglob("*.smk")):
        assert "toy_codec" not in p.read_text() and NAME not in p.read_text(), p


def test_summary_rows_carry_the_codecs_description(run):
    df = pd.read_csv(run / "tables" / "summary.csv")
    toy = df[df["codec"] == "toy"]
    assert len(toy) == 2 and (toy["status"] == "ok").all()
    assert set(toy["display_name"]) == {NAME} and set(toy["family"]) == {"toy"}
    assert set(toy["table_order"]) == {5} and toy["trains"].all()
    assert not df.loc[df["codec"] == "zstd", "trains"].any()
    assert (run / "encoded" / "vol" / "toy" / "bits-4" / "history.csv").exists()


def test_paper_tables_name_it(run):
    paper = run / "tables" / "paper"
    md = (paper / "gaussianpile_table1.md").read_text()
    assert f"| {NAME}, bits 4 |" in md and f"| {NAME}, bits 8 |" in md
    assert f"| vol | {NAME}, bits 4 |" in (paper / "volmicro_table2.md").read_text()
    assert NAME in (paper / "bdrate.md").read_text()
    assert NAME in (paper / "gaussianpile_table3.tex").read_text()


def test_figures_draw_it_in_its_own_style(run, drawn_lines):
    from volbench.paper import figures, selection, style

    plots = run / "plots" / "vol"
    for stem in ("rd_psnr_2d", "rd_psnr_3d", "qualitative", "error_maps", "training_dynamics"):
        assert (plots / f"{stem}.png").stat().st_size > 1000, stem  # training_dynamics: it trains
    df = selection.load_summary(run / "tables" / "summary.csv")
    look = style.styles(df)
    assert look["toy"].label == NAME
    others = {(s.color, s.marker) for c, s in look.items() if c != "toy"}
    assert (look["toy"].color, look["toy"].marker) not in others
    assert look["toy"].color not in {s.color for c, s in look.items() if c != "toy"}  # a hue of its own
    figures.rd_curves(df, "vol", run / "unused", metrics=("psnr_2d",))
    assert drawn_lines[NAME] == (look["toy"].color, look["toy"].marker)
