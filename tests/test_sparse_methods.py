"""Sparse slices (issue 19): the reconstruction methods, and the held-out discipline of each.

The canary test: two volumes that differ only in their held-out slices (one of them with garbage
there) give byte-identical training files and identical predictions for every method, so nothing
of a test slice can reach a method."""

from __future__ import annotations

import numpy as np
import pytest

from volbench import io
from volbench.errors import VolbenchError
from volbench.sparse import methods, split
from volbench.sparse.run import fit_cell, read_prediction

#: every registered method with a schedule of seconds on a 10 x 40 x 36 volume
FAST = {
    "nearest": {}, "linear": {}, "cubic": {},
    "siren": {"width": 16, "iterations": 30, "batch_size": 512, "progress": False},
    "gs3d_slice": {"preset": "demo", "iterations": 12, "n_gaussians": 120, "max_gaussians": 160, "densify_from": 4,
                   "densify_until": 10, "densify_interval": 4, "log_every": 6, "progress": False},
    "gaussianpile": {"preset": "demo", "iterations": 12, "n_gaussians": 120, "max_gaussians": 160, "densify_from": 4,
                     "densify_until": 10, "densify_interval": 4, "log_every": 6, "progress": False},
    "innergs": {"n_gaussians": 120, "iterations": 8, "log_every": 4, "progress": False},
    "triplane": {"n_gaussians": 120, "iterations": 8, "log_every": 4, "progress": False},
}


def test_every_registered_method_is_covered():
    assert set(FAST) == set(methods.available())


def _train(z, slices, test_z, shape, dtype=np.float64):
    return split.TrainSet(slices=np.asarray(slices), z=np.asarray(z), test_z=np.asarray(test_z), shape=shape,
                          dtype=np.dtype(dtype), spacing=(1.0, 1.0, 1.0), sigma_z=None, modality="x", dataset="t",
                          fraction=0.5, seed=0)


def test_interpolations_are_what_they_say():
    D, H, W = 9, 3, 2
    z = np.array([0, 1, 4, 6, 8])
    test = np.array([2, 3, 5, 7])
    ctx = methods.FitContext()
    # nearest: the nearest training slice, the lower one on a tie (z = 5 is between 4 and 6)
    ramp = np.arange(D, dtype=np.float64)[:, None, None] * np.ones((1, H, W))
    near = methods.get_method("nearest")().reconstruct(_train(z, ramp[z], test, (D, H, W)), ctx)
    assert near[:, 0, 0].tolist() == [1.0, 4.0, 4.0, 6.0]
    # linear: exact on data linear in z
    lin = methods.get_method("linear")().reconstruct(_train(z, 3 * ramp[z] + 1, test, (D, H, W)), ctx)
    np.testing.assert_allclose(lin, 3 * ramp[test] + 1)
    # cubic (not-a-knot spline at the uneven positions): exact on a cubic in z
    cub = ramp ** 3 - 4 * ramp ** 2 + ramp
    out = methods.get_method("cubic")().reconstruct(_train(z, cub[z], test, (D, H, W)), ctx)
    np.testing.assert_allclose(out, cub[test], rtol=1e-9, atol=1e-9)
    two = methods.get_method("cubic")().reconstruct(_train([0, 8], ramp[[0, 8]], test, (D, H, W)), ctx)
    np.testing.assert_allclose(two, ramp[test])  # two slices: the line through them


def test_unknown_methods_and_parameters_are_clear_errors():
    with pytest.raises(VolbenchError, match="unknown sparse method 'bogus'"):
        methods.get_method("bogus")
    with pytest.raises(VolbenchError, match="unknown parameter"):
        methods.get_method("siren")(widht=3)
    with pytest.raises(VolbenchError, match="sparse method gaussianpile"):
        methods.get_method("gaussianpile")(preset="nope")
    with pytest.raises(VolbenchError, match="bc_type"):
        methods.get_method("cubic")(bc_type="periodic-ish")


def test_to_dtype_rounds_clips_and_refuses_nan():
    assert methods.to_dtype(np.array([-3.0, 2.5, 300.0]), np.uint8).tolist() == [0, 2, 255]
    with pytest.raises(VolbenchError, match="NaN"):
        methods.to_dtype(np.array([np.nan]), np.uint8)


@pytest.fixture(scope="module")
def canary(tmp_path_factory):
    """The same volume twice, the second with garbage in every held-out slice, and their splits."""
    from volbench.datasets.synthetic import cells

    root = tmp_path_factory.mktemp("canary")
    clean = cells(shape=(10, 40, 36), seed=4)
    train_z, test_z = split.choose(10, 0.5, seed=0, dataset="c")
    poisoned = clean.copy()
    poisoned[test_z] = np.random.default_rng(0).integers(0, 65535, size=poisoned[test_z].shape, dtype=np.uint16)
    dirs = {}
    for name, vol in (("clean", clean), ("poisoned", poisoned)):
        d = root / name
        io.write_volume(d / "volume.tif", vol)
        io.write_json(d / "meta.json", {"spacing": [1.0, 0.5, 0.5], "sigma_z": 1.0, "modality": "confocal"})
        split.write_split(d / "volume.tif", d / "meta.json", "c", 0.5, 0, d / "input")
        dirs[name] = d
    return dirs, clean, test_z


def test_the_training_files_do_not_depend_on_the_test_slices(canary):
    dirs, _, _ = canary
    for f in (split.TRAIN_TIF, split.TRAIN_JSON, split.TRAIN_LABELS):
        assert (dirs["clean"] / "input" / f).read_bytes() == (dirs["poisoned"] / "input" / f).read_bytes()


@pytest.mark.parametrize("kind", sorted(FAST))
def test_predictions_do_not_depend_on_the_test_slices(canary, kind):
    dirs, clean, test_z = canary
    preds, recs = [], []
    for name in ("clean", "poisoned"):
        out = dirs[name] / "fits" / kind
        recs.append(fit_cell(dirs[name] / "input", kind, FAST[kind], out, seed=0, device="cpu"))
        preds.append(read_prediction(out))
    assert np.array_equal(preds[0], preds[1]), f"{kind}: the prediction changed with the held-out slices"
    assert preds[0].shape == (len(test_z), 40, 36) and preds[0].dtype == clean.dtype
    rec = recs[0]
    assert rec["status"] == "ok" and rec["method_type"] == kind and rec["split"]["test_z"] == list(test_z)
    assert rec["versions"]["numpy"] and rec["fit_seconds"] >= 0 and isinstance(rec["params"], dict)
    cls = methods.get_method(kind)
    assert (rec["fit_psnr"] is None) == (not cls.trains)  # trained methods report their fit
    assert ((dirs["clean"] / "fits" / kind / "history.csv").exists()) == cls.trains


def test_slice_training_reads_only_the_given_slices():
    """The slicefit hook: with `slices`, training never reads another slice of its target (NaN
    there would turn the loss into NaN); without it, the evenly spread slices are the old ones."""
    import torch

    from volbench.gaussian_ops import ops
    from volbench.gaussian_training import slicefit
    from volbench.gaussian_training.progress import Progress

    D = 9
    for n in (1, 4, 9, 16):
        old = np.unique(np.linspace(0, D - 1, min(D, n)).round().astype(int))
        assert np.array_equal(slicefit._spread(D, n), old)
    assert slicefit._spread(D, 2, [7, 1, 4]).tolist() == [1, 7]
    p = dict(FAST["gaussianpile"], **{k: v for k, v in methods.get_method("gaussianpile")(**FAST["gaussianpile"])
                                      .params.items() if k not in FAST["gaussianpile"]})
    vol = np.full((D, 16, 16), np.nan, dtype=np.float32)
    keep = [0, 3, 8]
    vol[keep] = np.random.default_rng(1).random((3, 16, 16), dtype=np.float32)
    gen = torch.Generator().manual_seed(0)
    sw = (1.0, 1.0, 1.0)
    init = slicefit.init_random(np.nan_to_num(vol), sw, 60, p, gen)
    init = slicefit.calibrate_opacity(ops, init, vol, sw, 1.0, "focus", p, "cpu", slices=keep)
    g, _ = slicefit.train(ops, vol, sw, 1.0, "focus", init, p, "cpu", gen, Progress("t", 12, None, False), slices=keep)
    assert all(np.all(np.isfinite(v)) for v in g.values())
    with pytest.raises(ValueError, match="slices"):
        slicefit.train(ops, vol, sw, 1.0, "focus", init, p, "cpu", gen, Progress("t", 1, None, False), slices=[D])
