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
    # a --configfile replaces the embedded default: nothing of it is merged into a partial config
    ("codecs only", {"codecs": GOOD_CODECS}, "no `datasets:` section; a --configfile replaces the embedded default"),
    ("datasets only", {"datasets": GOOD_DS}, "no `codecs:` section; a --configfile replaces the embedded default"),
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


def _dry_run(repo_root, workdir, *args):
    return subprocess.run(["snakemake", "-n", "--snakefile", str(repo_root / "Snakefile"), "--directory", str(workdir),
                           "--cores", "1", *args], capture_output=True, text=True, timeout=300)


def test_configfile_replaces_the_default_and_config_overrides_keys(tmp_path, repo_root):
    """`--configfile` plans its own datasets and codecs only, never the default's; `--config key=value`
    still overrides single keys, on top of a --configfile or of the default."""
    default = yaml.safe_load((repo_root / "config/config.yaml").read_text())
    cf = tmp_path / "mine.yaml"
    cf.write_text(yaml.safe_dump(_cfg()))
    r = _dry_run(repo_root, tmp_path, "--configfile", str(cf))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "results/metrics/a/zstd/level-3/metrics.json" in out
    for name in list(default["datasets"]) + [c for c in default["codecs"] if c != "zstd"]:
        assert f"/{name}/" not in out, name  # nothing of the default is planned
    r = _dry_run(repo_root, tmp_path, "--configfile", str(cf), "--config", "codecs={zstd: {rate_points: [{level: 5}]}}")
    assert r.returncode == 0 and "results/metrics/a/zstd/level-5/metrics.json" in r.stdout + r.stderr
    for args in (["--configfile", str(cf)], []):
        r = _dry_run(repo_root, tmp_path, *args, "--config", "device=bogus")
        assert r.returncode != 0 and "config device: 'bogus'" in r.stdout + r.stderr, (r.stdout + r.stderr)[-2000:]
    assert not (tmp_path / "results").exists()


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
