"""An invalid config fails before any job runs, with a message naming the key."""

from __future__ import annotations

import subprocess
import textwrap

import pytest
import yaml

from volbench.config import check_config, point_label
from volbench.errors import VolbenchError

GOOD_DS = {"a": {"synthetic": {"generator": "neuron", "shape": [8, 32, 32]}}}
GOOD_CODECS = {"zstd": {"rate_points": [{"level": 3}]}}


def _cfg(**over):
    cfg = {"datasets": GOOD_DS, "codecs": GOOD_CODECS}
    cfg.update(over)
    return cfg


CASES = [
    ("unknown top-level key", _cfg(codes={}), "codes"),
    ("url without sha256", _cfg(datasets={"d": {"url": "https://example.org/v.tif"}}), "sha256"),
    ("http url", _cfg(datasets={"d": {"url": "http://example.org/v.tif", "sha256": "0" * 64}}), "not https"),
    ("two sources", _cfg(datasets={"d": {"path": "v.tif", "synthetic": {"generator": "cells"}}}),
     "datasets.d: give exactly one of synthetic, path, url"),
    ("no source", _cfg(datasets={"d": {"spacing": [1, 1, 1]}}), "datasets.d: give exactly one of synthetic, path, url"),
    ("unsafe dataset name", _cfg(datasets={"a;rm": {"path": "v.tif"}}), "a;rm"),
    ("unsafe codec name", _cfg(codecs={"z/s": {"codec": "zstd", "rate_points": [{"level": 1}]}}), "z/s"),
    ("rate_points not a list", _cfg(codecs={"zstd": {"rate_points": {"level": 3}}}), "rate_points"),
    ("unknown codec", _cfg(codecs={"fancy": {"rate_points": [{"q": 1}]}}), "unknown codec type 'fancy'"),
    ("unknown parameter", _cfg(codecs={"zstd": {"rate_points": [{"levle": 3}]}}), "codecs.zstd.rate_points[0]"),
    ("duplicate points", _cfg(codecs={"zstd": {"rate_points": [{"level": 3}, {"level": 3}]}}), "duplicate"),
    ("target_bpp without knob", _cfg(codecs={"zstd": {"rate_points": [{"target_bpp": 2}]}}), "no rate knob"),
    ("bad spacing type", _cfg(datasets={"a": {"synthetic": {"generator": "cells"}, "spacing": "1,1,1"}}),
     "datasets.a.spacing"),
    ("unknown paper option", _cfg(paper={"rd_metric": ["psnr_3d"]}), "'rd_metric' was unexpected"),
    ("unknown rd metric", _cfg(paper={"rd_metrics": ["psnr_3d", "psnr"]}), "paper.rd_metrics[1]: 'psnr' is not one of"),
    ("bad bd_method", _cfg(paper={"bd_method": "linear"}), "paper.bd_method: 'linear' is not one of"),
]


@pytest.mark.parametrize("label,cfg,needle", CASES, ids=[c[0] for c in CASES])
def test_invalid_config_fails_before_any_job(tmp_path, repo_root, label, cfg, needle):
    cf = tmp_path / "bad.yaml"
    cf.write_text(yaml.safe_dump(cfg))
    r = subprocess.run(["snakemake", "--snakefile", str(repo_root / "Snakefile"), "--directory", str(tmp_path),
                        "--configfile", str(cf), "--cores", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert needle in r.stdout + r.stderr, (r.stdout + r.stderr)[-2000:]
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()


def test_check_config_accepts_the_shipped_configs(repo_root):
    for name in ("config/config.yaml", "config/full.yaml", "tests/configs/tiny.yaml"):
        check_config(yaml.safe_load((repo_root / name).read_text()))


def test_schema_accepts_the_shipped_configs_and_every_paper_option(repo_root):
    import jsonschema

    validator = jsonschema.Draft202012Validator(yaml.safe_load((repo_root / "workflow/schemas/config.schema.yaml").read_text()))
    for name in ("config/config.yaml", "config/paper.yaml", "config/full.yaml", "tests/configs/tiny.yaml"):
        validator.validate(yaml.safe_load((repo_root / name).read_text()))
    paper = {"rd_metrics": ["psnr_2d", "ssim_fg"], "qualitative_bpv": 0.1, "qualitative_slice": {"a": 3},
             "bd_method": "akima", "bd_min_points": 3, "bd_min_overlap": 0.5}
    validator.validate(_cfg(paper=paper))
    validator.validate(_cfg(paper={"qualitative_slice": 7}))


def test_point_labels():
    assert point_label({"crf": 28}) == "crf-28"
    assert point_label({"target_bpp": 0.5}) == "target_bpp-0.5"
    assert point_label({"rate": 2.0, "mode": "rate"}) == "mode-rate_rate-2"
    assert point_label({"label": "paper", "crf": 16}) == "paper"
    # labels become folder names: a label that is a path is refused, never passed through
    with pytest.raises(VolbenchError, match="safe folder name"):
        point_label({"label": "../x"})
