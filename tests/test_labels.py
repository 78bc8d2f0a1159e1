"""Optional label (segmentation) volumes: the synthetic generators' labels, the `labels:` entry of
a dataset (files, checks, canonical axes), what the prepare step writes, and the rules' scheme."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tifffile
import yaml

from volbench.datasets import labels, prepare, synthetic
from volbench.errors import VolbenchError
from volbench.io import read_json, read_volume

# SHA-256 of the volumes' bytes as the generators gave them before they could return labels:
# returning labels must not move a single voxel (the default run's numbers stay as they were)
VOLUME_SHA256 = [
    ({"generator": "neuron", "shape": [32, 96, 96], "seed": 1},
     "97a2858e643d45116e37ea6aac5fe36b2e37abd52299ebaf632bd104f0e70aae"),
    ({"generator": "cells", "shape": [24, 96, 96], "seed": 2},
     "64736739b7cb27b8703b6e6f31027f4d0d213daac623da7656b04ece70f1b27e"),
    ({"generator": "ultrasound", "shape": [24, 96, 96], "seed": 3},
     "6c1961515da336098456ba0f78f747281514372434c06d561b5665eecc1ae34e"),
    ({"generator": "neuron", "shape": [12, 40, 36], "seed": 5},
     "93c985a0b9163d81118f8baff471b8a3ba8fb2f7d1b13772009565e1d41c2f29"),
    ({"generator": "ultrasound", "shape": [10, 36, 40], "seed": 6},
     "630bfce025b304fafd89ec8cc9e43a8e1906dffb14b2d2d2e954062b1db984bb"),
    ({"generator": "cells", "shape": [10, 36, 40], "seed": 7, "n_cells": 12},
     "b9c39f5a6ea92c8199e924396a1b6b0c137b5ca6790ae616499f7e68020836fb"),
    ({"generator": "ultrasound", "shape": [12, 40, 40], "seed": 0, "n_layers": 6, "slice_thickness": 0},
     "826c25b44cbf63bbefc603ea844bd4fe5d8c90322bf66696206a6155b0f6604f"),
]


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


# -- the generators' labels -----------------------------------------------------------------------


@pytest.mark.parametrize("spec,sha", VOLUME_SHA256, ids=[f"{s['generator']}-{s['seed']}" for s, _ in VOLUME_SHA256])
def test_volume_bytes_do_not_change_with_labels(spec, sha):
    vol = synthetic.generate(spec)
    assert _sha(vol) == sha
    vol2, lab, classes = synthetic.generate_with_labels(spec)
    assert _sha(vol2) == sha and vol2.dtype == vol.dtype
    assert lab.shape == vol.shape and lab.dtype == np.uint8
    assert int(lab.max()) < len(classes)


def test_default_config_volumes_unchanged(repo_root):
    """The default config's synthetic datasets are the first three recorded volumes."""
    cfg = yaml.safe_load((repo_root / "config/config.yaml").read_text())
    recorded = {json.dumps(s, sort_keys=True): sha for s, sha in VOLUME_SHA256}
    for name, entry in cfg["datasets"].items():
        if "synthetic" in entry:
            assert json.dumps(entry["synthetic"], sort_keys=True) in recorded, name
            assert labels.spec(name, entry) == {"kind": "synthetic"}  # labels on by default
    assert {"cells", "ultrasound"} <= set(labels.labeled_datasets(cfg))


def test_cells_labels_are_the_nuclei():
    vol, lab, classes = synthetic.generate_with_labels({"generator": "cells", "shape": [24, 96, 96], "seed": 2})
    assert classes == ["background", "nucleus"]
    assert set(np.unique(lab)) == {0, 1}
    frac = float(lab.mean())
    assert 0.03 < frac < 0.5, frac
    # nuclei are bright: their median is far above the background's
    assert np.median(vol[lab == 1]) > 3 * np.median(vol[lab == 0])


def test_cells_labels_match_membership_rule():
    """label 1 exactly where some cell's soft-edged membership is > 0.5 (inside its ellipsoid)."""
    shape, seed, n = (8, 30, 28), 4, 5
    _, lab, _ = synthetic.cells(shape=shape, seed=seed, n_cells=n, return_labels=True)
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    ref = np.zeros(shape, bool)
    for _ in range(n):  # the generator's draws, in its order
        c = np.array(shape) * rng.uniform(0.05, 0.95, 3)
        r = rng.uniform(3.0, 10.0) * rng.uniform(0.7, 1.3, 3)
        r[0] *= 0.6
        d2 = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2
        ref |= 1.0 / (1.0 + np.exp(np.clip((d2 - 1.0) * 8.0, -50, 50))) > 0.5
        rng.uniform(3000.0, 30000.0), rng.uniform(0, 6)
    assert np.array_equal(lab.astype(bool), ref)


def test_ultrasound_labels_layers_and_lesion():
    spec = {"generator": "ultrasound", "shape": [24, 96, 96], "seed": 3}
    vol, lab, classes = synthetic.generate_with_labels(spec)
    assert classes == ["layer_0", "layer_1", "layer_2", "layer_3", "layer_4", "lesion", "lesion_rim"]
    assert classes == synthetic.ultrasound_classes(4)
    assert set(np.unique(lab)) == set(range(7))  # every class present
    les, rim = classes.index("lesion"), classes.index("lesion_rim")
    # the lesion is hypoechoic, its rim bright
    assert vol[lab == les].mean() < 0.5 * vol[lab == rim].mean()
    # layers go down in depth (Y): a column's layer index never decreases outside the lesion
    col = lab[12, :, 5]
    col = col[col <= 4]
    assert col[0] == 0
    _, lab6, classes6 = synthetic.generate_with_labels({**spec, "n_layers": 6})
    assert len(classes6) == 9 and int(lab6.max()) <= 8


def test_neuron_labels_are_the_tubes():
    vol, lab, classes = synthetic.generate_with_labels({"generator": "neuron", "shape": [32, 96, 96], "seed": 1})
    assert classes == ["background", "neurite"]
    assert 0.005 < float(lab.mean()) < 0.2
    assert np.median(vol[lab == 1]) > 5 * np.median(vol[lab == 0])


def test_return_labels_is_not_a_generator_parameter():
    with pytest.raises(VolbenchError, match="dataset d: `return_labels` is not a generator parameter"):
        synthetic.generate({"generator": "cells", "return_labels": True}, "d")


# -- the `labels:` entry ---------------------------------------------------------------------------

SYN = {"synthetic": {"generator": "cells", "shape": [6, 20, 24], "seed": 1}}


def test_spec_defaults_and_forms():
    assert labels.spec("a", SYN) == {"kind": "synthetic"}
    assert labels.spec("a", {**SYN, "labels": True}) == {"kind": "synthetic"}
    assert labels.spec("a", {**SYN, "labels": False}) is None
    assert labels.spec("a", {"path": "v.tif"}) is None
    assert labels.spec("a", {"path": "v.tif", "labels": False}) is None
    assert labels.spec("a", {"path": "v.tif", "labels": "l.tif"}) == {"kind": "path", "path": "l.tif"}
    s = labels.spec("a", {"path": "v.tif", "labels": {"path": "l.h5", "key": "seg", "classes": ["bg", "x"]}})
    assert s == {"kind": "path", "path": "l.h5", "key": "seg", "classes": ["bg", "x"]}
    url = {"url": "https://example.org/a.zip", "sha256": "a" * 64, "member": "vol.tif"}
    s = labels.spec("a", {**url, "labels": {"member": "seg/labels.tif"}})  # same archive
    assert s["kind"] == "url" and s["url"] == url["url"] and s["sha256"] == url["sha256"]
    assert labels.download_path("a", s) == "resources/downloads/a/labels/labels.tif"
    cfg = {"datasets": {"a": {**url, "labels": {"member": "seg/labels.tif"}}, "b": {"path": "v.tif"}}}
    assert labels.label_input(cfg, "a") == ["resources/downloads/a/labels/labels.tif"]
    assert labels.label_input(cfg, "b") == []
    assert labels.fetch_entry(cfg, "a", "labels/labels.tif") == {
        "url": url["url"], "sha256": url["sha256"], "member": "seg/labels.tif", "allow_http": False}
    assert labels.fetch_entry(cfg, "a", "vol.tif") is cfg["datasets"]["a"]
    assert labels.has_labels(cfg, "a") and not labels.has_labels(cfg, "b")
    assert labels.labels_path("a") == "results/data/a/labels.tif"


@pytest.mark.parametrize("entry,needle", [
    ({**SYN, "labels": "l.tif"}, "datasets.d.labels: a synthetic dataset's labels are its generator's"),
    ({"path": "v.tif", "labels": True}, "datasets.d.labels: `labels: true` is for synthetic datasets"),
    ({"path": "v.tif", "labels": {"classes": ["a"]}}, "datasets.d.labels: name the label file"),
    ({"path": "v.tif", "labels": {"url": "https://example.org/l.tif"}}, "needs its sha256"),
    ({"path": "v.tif", "labels": {"url": "http://example.org/l.tif", "sha256": "0" * 64}}, "is not https"),
    ({"path": "v.tif", "labels": {"member": "l.tif"}}, "needs a `url:` dataset"),
    ({"path": "v.tif", "labels": {"path": "l.tif", "url": "https://e.org/l", "sha256": "0" * 64}},
     "give either path or url"),
    ({"path": "v.tif", "labels": {"path": "l.tif", "classes": ["a", "a"]}}, "must be distinct"),
    ({"path": "v.tif", "labels": {"path": "l.tif", "classes": [f"c{i}" for i in range(65)]}}, "at most 64"),
])
def test_spec_errors_name_the_key(entry, needle):
    with pytest.raises(VolbenchError, match="datasets.d.labels") as exc:
        labels.spec("d", entry)
    assert needle in str(exc.value)


def test_block_mode_ties_to_smaller_class():
    a = np.zeros((2, 2, 4), np.uint8)
    a[:, :, :2] = [[[3, 3], [1, 1]], [[1, 2], [2, 3]]]  # 3:3, 1:3, 2:2 -> tie 1/3 -> 1
    a[:, :, 2:] = 5
    out = labels.block_mode(a, [2, 2, 2])
    assert out.shape == (1, 1, 2) and out.tolist() == [[[1, 5]]]


# -- the prepare step ------------------------------------------------------------------------------


def test_prepare_writes_synthetic_labels(tmp_path):
    spec = {"generator": "ultrasound", "shape": [10, 36, 40], "seed": 6}
    meta = prepare.prepare("us", {"synthetic": spec}, tmp_path / "us")
    vol = read_volume(tmp_path / "us" / "volume.tif")
    lab = read_volume(tmp_path / "us" / "labels.tif")
    assert _sha(vol) == VOLUME_SHA256[4][1]
    _, ref, classes = synthetic.generate_with_labels(spec)
    assert lab.dtype == np.uint8 and np.array_equal(lab, ref)
    info = meta["labels"]
    assert info == read_json(tmp_path / "us" / "meta.json")["labels"]
    assert info["file"] == "labels.tif" and info["classes"] == classes and info["n_classes"] == len(classes) == 7
    assert info["source"] == {"kind": "synthetic", "generator": "ultrasound"}
    assert info["voxels"] == np.bincount(ref.ravel(), minlength=7).tolist() and sum(info["voxels"]) == vol.size
    assert info["sha256"] == hashlib.sha256((tmp_path / "us" / "labels.tif").read_bytes()).hexdigest()
    got = labels.read_labels(tmp_path / "us")
    assert got is not None and np.array_equal(got[0], ref) and got[1] == info


def test_synthetic_labels_follow_crop_scan_axis_and_downsample(tmp_path):
    spec = {"generator": "cells", "shape": [12, 40, 36], "seed": 3}
    entry = {"synthetic": spec, "scan_axis": "Y", "crop": {"z": [2, 38], "x": [1, 11]}, "downsample": [2, 1, 2]}
    prepare.prepare("c", entry, tmp_path / "c")
    vol, lab = read_volume(tmp_path / "c" / "volume.tif"), read_volume(tmp_path / "c" / "labels.tif")
    assert vol.shape == lab.shape == (18, 12, 5)
    _, raw, _ = synthetic.generate_with_labels(spec)
    ref = np.transpose(raw, (1, 0, 2))[2:38, :, 1:11]
    assert np.array_equal(lab, labels.block_mode(ref, [2, 1, 2]))


def test_dataset_without_labels_has_none(tmp_path, rng):
    v = rng.integers(0, 500, (6, 10, 12)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "v.tif", v)
    meta = prepare.prepare("d", {"path": str(tmp_path / "v.tif")}, tmp_path / "d")
    assert meta["labels"] is None and read_json(tmp_path / "d" / "meta.json")["labels"] is None
    assert not (tmp_path / "d" / "labels.tif").exists()
    assert labels.read_labels(tmp_path / "d") is None
    # a synthetic dataset with `labels: false`: none, and a labels.tif of an earlier run is removed
    prepare.prepare("s", SYN, tmp_path / "s")
    assert (tmp_path / "s" / "labels.tif").exists()
    meta = prepare.prepare("s", {**SYN, "labels": False}, tmp_path / "s")
    assert meta["labels"] is None and not (tmp_path / "s" / "labels.tif").exists()


def _scramble(a: np.ndarray) -> np.ndarray:
    """A ZYX array stored as X, Z, Y (so that the canonical step must reorder it)."""
    return np.ascontiguousarray(np.transpose(a, (2, 0, 1)))


def test_file_labels_get_the_volumes_canonicalisation(tmp_path, rng):
    v = rng.integers(0, 4000, (8, 14, 16)).astype(np.uint16)
    lab = (v % 5).astype(np.int16)
    np.save(tmp_path / "v.npy", _scramble(v))
    np.save(tmp_path / "l.npy", _scramble(lab))
    entry = {"path": str(tmp_path / "v.npy"), "axes": "XZY", "scan_axis": "Y", "crop": {"y": [1, 7], "x": [2, 16]},
             "labels": {"path": str(tmp_path / "l.npy"), "classes": ["a", "b", "c", "d", "e"]}}
    meta = prepare.prepare("d", entry, tmp_path / "d")
    vol, got = read_volume(tmp_path / "d" / "volume.tif"), read_volume(tmp_path / "d" / "labels.tif")
    assert vol.shape == got.shape == tuple(meta["shape"]) == (14, 6, 14)
    assert np.array_equal(got, vol % 5)  # the same voxels, in the same canonical places
    assert meta["labels"]["classes"] == ["a", "b", "c", "d", "e"] and meta["labels"]["n_classes"] == 5
    assert meta["labels"]["source"]["kind"] == "path" and meta["labels"]["source"]["file"] == "l.npy"
    # a label file in other axes than the volume's: `labels.axes`
    np.save(tmp_path / "l2.npy", lab)
    entry["labels"] = {"path": str(tmp_path / "l2.npy"), "axes": "ZYX"}
    meta = prepare.prepare("d", entry, tmp_path / "d")
    assert np.array_equal(read_volume(tmp_path / "d" / "labels.tif"), vol % 5)
    assert meta["labels"]["classes"] == [f"class_{k}" for k in range(5)]
    # a multichannel volume (ZCYX, channel 1) with a 3D label file; a downsampled one
    v4 = rng.integers(0, 4000, (6, 2, 10, 12)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "v4.tif", v4, metadata={"axes": "ZCYX"})
    l3 = (v4[:, 1] > 2000).astype(np.uint8)
    tifffile.imwrite(tmp_path / "l3.tif", l3)
    entry = {"path": str(tmp_path / "v4.tif"), "channel": 1, "downsample": [1, 2, 2],
             "labels": str(tmp_path / "l3.tif")}
    meta = prepare.prepare("m", entry, tmp_path / "m")
    got = read_volume(tmp_path / "m" / "labels.tif")
    assert got.shape == tuple(meta["shape"]) == (6, 5, 6)
    assert np.array_equal(got, labels.block_mode(l3, [1, 2, 2]))


def test_float_integral_and_bool_labels_accepted(tmp_path, rng):
    v = rng.integers(0, 4000, (4, 8, 10)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "v.tif", v)
    for name, lab in (("f", (v % 3).astype(np.float32)), ("b", v > 2000)):
        np.save(tmp_path / f"{name}.npy", lab)
        meta = prepare.prepare(name, {"path": str(tmp_path / "v.tif"), "labels": str(tmp_path / f"{name}.npy")},
                               tmp_path / name)
        got = read_volume(tmp_path / name / "labels.tif")
        assert got.dtype == np.uint8 and np.array_equal(got, lab.astype(np.uint8))
        assert meta["labels"]["n_classes"] == int(lab.max()) + 1


def _prep_cli_fails(tmp_path, entry, name="bad1"):
    """The prepare command fails with one line naming the dataset; none of its files is left
    (a labels.tif of an earlier run included)."""
    out = tmp_path / "results" / "data" / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "labels.tif").write_bytes(b"stale")
    r = subprocess.run([sys.executable, "-m", "volbench.cli", "prepare", "--name", name,
                        "--entry", json.dumps(entry), "--out-dir", str(out)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode != 0
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1, r.stderr
    assert f"dataset {name}" in err[0] or f"datasets.{name}" in err[0], err[0]
    for f in ("volume.tif", "meta.json", "labels.tif"):
        assert not (out / f).exists(), f
    return err[0]


@pytest.fixture
def volfile(tmp_path, rng):
    v = rng.integers(0, 4000, (6, 10, 12)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "v.tif", v)
    return tmp_path / "v.tif"


def _bad(tmp_path, volfile, lab, **extra):
    np.save(tmp_path / "l.npy", lab)
    return _prep_cli_fails(tmp_path, {"path": str(volfile), "labels": {"path": str(tmp_path / "l.npy"), **extra}})


def test_wrong_shape(tmp_path, volfile):
    msg = _bad(tmp_path, volfile, np.zeros((6, 10, 11), np.uint8))
    assert "label file l.npy has shape (6, 10, 11) after canonicalisation, the volume (6, 10, 12)" in msg
    assert "must have the volume's shape" in msg


def test_negative(tmp_path, volfile):
    lab = np.zeros((6, 10, 12), np.int16)
    lab[0, 0, 0] = -1
    assert "label file l.npy holds negative values (min -1)" in _bad(tmp_path, volfile, lab)


def test_float_not_integral(tmp_path, volfile):
    lab = np.zeros((6, 10, 12), np.float32)
    lab[1, 2, 3] = 0.5
    msg = _bad(tmp_path, volfile, lab)
    assert "label file l.npy holds non-integral values (e.g. 0.5)" in msg and "integer type" in msg


def test_float_nan(tmp_path, volfile):
    lab = np.zeros((6, 10, 12), np.float32)
    lab[1, 2, 3] = np.nan
    assert "1 NaN/Inf voxels" in _bad(tmp_path, volfile, lab)


def test_too_many_classes(tmp_path, volfile):
    lab = np.zeros((6, 10, 12), np.uint16)
    lab[0, 0, :] = [1, 2, 3, 900, 5, 6, 7, 8, 9, 10, 11, 64]
    msg = _bad(tmp_path, volfile, lab)
    assert "holds values up to 900, more than the 64 classes supported" in msg and "instance segmentation" in msg


def test_fewer_class_names_than_classes(tmp_path, volfile):
    lab = np.full((6, 10, 12), 2, np.uint8)
    msg = _bad(tmp_path, volfile, lab, classes=["bg", "x"])
    assert "holds value 2, but `labels.classes:` names 2 classes" in msg


def test_wrong_dtype(tmp_path, volfile):
    assert "has dtype complex64" in _bad(tmp_path, volfile, np.zeros((6, 10, 12), np.complex64))


def test_missing_label_file(tmp_path, volfile):
    msg = _prep_cli_fails(tmp_path, {"path": str(volfile), "labels": str(tmp_path / "none.tif")})
    assert "label file" in msg and "none.tif does not exist; fix `labels.path:`" in msg


def test_unreadable_label_file(tmp_path, volfile):
    (tmp_path / "l.tif").write_bytes(b"not a tiff")
    msg = _prep_cli_fails(tmp_path, {"path": str(volfile), "labels": str(tmp_path / "l.tif")})
    assert "dataset bad1 (labels): cannot read l.tif as tiff" in msg


def test_bad_labels_entry_fails_in_cli(tmp_path, volfile):
    msg = _prep_cli_fails(tmp_path, {"path": str(volfile), "labels": True})
    assert "datasets.bad1.labels: `labels: true` is for synthetic datasets" in msg


# -- the rules: labels.tif is an output only of datasets with labels; codecs never see it ----------


def _snakemake(repo_root, workdir, cfg, *args, dry=True):
    cf = workdir / "cfg.yaml"
    cf.write_text(yaml.safe_dump(cfg))
    cmd = ["snakemake", "--snakefile", str(repo_root / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(cf), "--cores", "1", *(["-n"] if dry else []), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return r, r.stdout + r.stderr


def test_rules_plan_labels_only_where_present(tmp_path, repo_root):
    cfg = {"datasets": {"a": {"synthetic": {"generator": "cells", "shape": [6, 32, 32], "seed": 1}},
                        "b": {"synthetic": {"generator": "cells", "shape": [6, 32, 32], "seed": 1}, "labels": False}},
           "codecs": {"zstd": {"rate_points": [{"level": 1}]}}}
    r, out = _snakemake(repo_root, tmp_path, cfg, "results/metrics/a/zstd/level-1/metrics.json",
                        "results/metrics/b/zstd/level-1/metrics.json")
    assert r.returncode == 0, out[-3000:]
    assert re.search(r"rule prepare_labeled:\n\s+output: results/data/a/volume.tif, results/data/a/meta.json, "
                     r"results/data/a/labels.tif", out), out[-3000:]
    assert re.search(r"rule prepare:\n\s+output: results/data/b/volume.tif, results/data/b/meta.json\n", out)
    assert "results/data/b/labels.tif" not in out
    encodes = re.findall(r"^rule encode:\n\s+input: (.*)$", out, re.M)
    assert len(encodes) == 2 and not any("labels.tif" in e for e in encodes), encodes
    # a bad `labels:` stops before any job
    cfg["datasets"]["b"]["labels"] = "x.tif"
    r, out = _snakemake(repo_root, tmp_path, cfg)
    assert r.returncode != 0 and "datasets.b.labels: a synthetic dataset's labels are its generator's" in out


def test_rules_fetch_and_prepare_url_labels(tmp_path, repo_root, rng):
    """A url dataset whose labels are another member of its archive: the fetch rule downloads them
    to resources/downloads/<dataset>/labels/, prepare_labeled writes labels.tif."""
    v = rng.integers(0, 4000, (5, 12, 14)).astype(np.uint16)
    lab = (v > 3000).astype(np.uint8)
    buf = tmp_path / "src"
    buf.mkdir()
    tifffile.imwrite(buf / "v.tif", v)
    tifffile.imwrite(buf / "l.tif", lab)
    arch = tmp_path / "data.zip"
    with zipfile.ZipFile(arch, "w") as zf:
        zf.write(buf / "v.tif", "img/v.tif")
        zf.write(buf / "l.tif", "seg/l.tif")
    sha = hashlib.sha256(arch.read_bytes()).hexdigest()
    cfg = {"datasets": {"z": {"url": arch.as_uri(), "sha256": sha, "member": "img/v.tif",
                              "labels": {"member": "seg/l.tif", "classes": ["bg", "fg"]}}},
           "codecs": {"zstd": {"rate_points": [{"level": 1}]}}}
    work = tmp_path / "w"
    work.mkdir()
    r, out = _snakemake(repo_root, work, cfg, "results/data/z/labels.tif", dry=False)
    assert r.returncode == 0, out[-3000:]
    assert (work / "resources/downloads/z/labels/l.tif").exists()
    got = labels.read_labels(work / "results/data/z")
    assert got is not None and np.array_equal(got[0], lab)
    assert got[1]["classes"] == ["bg", "fg"] and got[1]["source"]["member"] == "seg/l.tif"
    assert np.array_equal(read_volume(work / "results/data/z/volume.tif"), v)



def test_rules_missing_label_path_stops_with_instructions(tmp_path, repo_root, rng):
    """A `labels:` path missing at parse time plans (like a missing `path:` volume); the run
    stops with the dataset and what to do, and writes none of the dataset's files."""
    tifffile.imwrite(tmp_path / "v.tif", rng.integers(0, 100, (4, 8, 8)).astype(np.uint16))
    cfg = {"datasets": {"m": {"path": str(tmp_path / "v.tif"), "labels": str(tmp_path / "seg.tif")}},
           "codecs": {"zstd": {"rate_points": [{"level": 1}]}}}
    work = tmp_path / "w"
    work.mkdir()
    r, out = _snakemake(repo_root, work, cfg, "results/data/m/labels.tif")
    assert r.returncode == 0, out[-3000:]
    r, out = _snakemake(repo_root, work, cfg, "results/data/m/labels.tif", dry=False)
    assert r.returncode != 0
    assert f"dataset m: label file {tmp_path / 'seg.tif'} does not exist; place it there" in out, out[-3000:]
    assert not (work / "results/data/m").exists() or not any((work / "results/data/m").iterdir())
