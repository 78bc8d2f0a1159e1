"""Sparse slices (issue 19): the seeded split and the training file a method's job receives."""

from __future__ import annotations

import json

import numpy as np
import pytest

from volbench import io
from volbench.errors import VolbenchError
from volbench.sparse import split


@pytest.mark.parametrize("depth", [3, 4, 10, 24, 33, 160])
@pytest.mark.parametrize("fraction", [0.01, 0.25, 0.5, 0.95, 0.99])
def test_split_keeps_ends_and_the_fraction(depth, fraction):
    train, test = split.choose(depth, fraction, seed=0, dataset="d")
    assert train[0] == 0 and train[-1] == depth - 1  # the first and last slice always train
    assert sorted(train + test) == list(range(depth)) and not set(train) & set(test)
    assert len(train) == min(max(int(np.floor(fraction * depth + 0.5)), 2), depth - 1)
    assert len(test) >= 1 and train == sorted(train) and test == sorted(test)


def test_split_is_seeded_and_nested():
    a = split.choose(160, 0.5, seed=3, dataset="brain")
    assert a == split.choose(160, 0.5, seed=3, dataset="brain")
    assert a != split.choose(160, 0.5, seed=4, dataset="brain")
    assert a != split.choose(160, 0.5, seed=3, dataset="other")
    sets = [set(split.choose(160, f, seed=3, dataset="brain")[0]) for f in (0.25, 0.5, 0.95)]
    assert sets[0] < sets[1] < sets[2]  # 25 % within 50 % within 95 %
    assert [len(s) for s in sets] == [40, 80, 152]  # Table 1's fractions of a 160-slice volume


def test_split_rejects_too_few_slices_and_bad_fractions():
    with pytest.raises(VolbenchError, match="at least 3 axial slices"):
        split.choose(2, 0.5, 0, "flat")
    for f in (0.0, 1.0, 1.5):
        with pytest.raises(VolbenchError, match="not in"):
            split.choose(10, f, 0, "d")


def _dataset(tmp_path, vol, name="d"):
    io.write_volume(tmp_path / "volume.tif", vol)
    io.write_json(tmp_path / "meta.json", {"name": name, "spacing": [2.0, 0.5, 0.5], "sigma_z": 3.0,
                                           "modality": "ultrasound", "value_min": float(vol.min()),
                                           "value_max": float(vol.max()), "volume_sha256": "x"})


def test_training_file_holds_only_training_slices(tmp_path, rng):
    vol = rng.integers(0, 60000, size=(12, 20, 18)).astype(np.uint16)
    _dataset(tmp_path, vol)
    rec = split.write_split(tmp_path / "volume.tif", tmp_path / "meta.json", "d", 0.5, 7, tmp_path / "in")
    stored = io.read_volume(tmp_path / "in" / split.TRAIN_TIF)
    assert np.array_equal(stored, vol[rec["train_z"]])
    for z in rec["test_z"]:  # no held-out slice is anywhere in the file
        assert not any(np.array_equal(vol[z], s) for s in stored)
    meta = json.loads((tmp_path / "in" / split.TRAIN_JSON).read_text())
    # nothing computed from the voxels (the whole volume's range would tell about the test slices)
    assert not {"value_min", "value_max", "volume_sha256"} & set(meta)
    assert meta["spacing"] == [2.0, 0.5, 0.5] and meta["sigma_z"] == 3.0 and meta["shape"] == [12, 20, 18]
    tr = split.read_train(tmp_path / "in")
    assert tr.z.tolist() == rec["train_z"] and tr.test_z.tolist() == rec["test_z"]
    assert tr.dtype == np.uint16 and tr.spacing == (2.0, 0.5, 0.5) and tr.label == "0.5"
    assert np.array_equal(split.heldout_indices(tmp_path / "in"), rec["test_z"])


def test_read_train_refuses_a_tampered_split(tmp_path, rng):
    vol = rng.integers(0, 255, size=(9, 16, 16)).astype(np.uint8)
    _dataset(tmp_path, vol)
    split.write_split(tmp_path / "volume.tif", tmp_path / "meta.json", "d", 0.5, 0, tmp_path / "in")
    good = (tmp_path / "in" / split.TRAIN_JSON).read_text()
    # the whole volume put in place of the training slices: refused by its checksum
    io.write_volume(tmp_path / "in" / split.TRAIN_TIF, vol)
    with pytest.raises(VolbenchError, match="does not match"):
        split.read_train(tmp_path / "in")
    split.write_split(tmp_path / "volume.tif", tmp_path / "meta.json", "d", 0.5, 0, tmp_path / "in")
    rec = json.loads(good)
    rec["test_z"] = rec["test_z"] + [rec["train_z"][1]]  # an index both training and test
    (tmp_path / "in" / split.TRAIN_JSON).write_text(json.dumps(rec))
    with pytest.raises(VolbenchError, match="overlap"):
        split.read_train(tmp_path / "in")
    with pytest.raises(VolbenchError, match="no training split"):
        split.read_train(tmp_path / "nothing")
