"""Sparse slices part 2 (issue 20): labels through the split, the compositing Gaussian methods
(InnerGS-style and tri-plane), their renderings along the three axes, the semantic metrics, the
per-axis table (seed 004 Tables 2-3 layout) and the segmentation outlines in the figure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from volbench import io
from volbench.errors import VolbenchError
from volbench.sparse import composite_fit, figure, run, score, split, table_axes

torch = pytest.importorskip("torch")

#: seconds-scale schedules on the 10 x 32 x 28 volume below
FAST = {"n_gaussians": 150, "iterations": 12, "batch_slices": 2, "log_every": 6, "progress": False}


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    from volbench.datasets.synthetic import cells

    root = tmp_path_factory.mktemp("sparse_sem")
    vol, lab, classes = cells(shape=(10, 32, 28), seed=4, n_cells=8, return_labels=True)
    assert lab.max() == 1 and lab.min() == 0
    io.write_volume(root / "volume.tif", vol)
    io.write_volume(root / "labels.tif", lab)
    io.write_json(root / "meta.json", {"spacing": [1.0, 0.5, 0.5], "sigma_z": 1.0, "modality": "confocal",
                                       "labels": {"file": "labels.tif", "classes": classes, "n_classes": 2}})
    split.write_split(root / "volume.tif", root / "meta.json", "c", 0.5, 0, root / "input",
                      labels_path=root / "labels.tif")
    return root, vol, lab


def test_split_carries_the_training_slices_labels_only(ds, tmp_path):
    root, vol, lab = ds
    t = split.read_train(root / "input")
    assert t.classes == ["background", "nucleus"] and t.n_classes == 2
    np.testing.assert_array_equal(t.labels, lab[t.z])
    # the labels of held-out slices never reach the training folder
    other = lab.copy()
    other[t.test_z] = 1 - other[t.test_z]
    io.write_volume(tmp_path / "labels.tif", other)
    split.write_split(root / "volume.tif", root / "meta.json", "c", 0.5, 0, tmp_path / "in2",
                      labels_path=tmp_path / "labels.tif")
    assert (tmp_path / "in2" / split.TRAIN_LABELS).read_bytes() == (root / "input" / split.TRAIN_LABELS).read_bytes()
    # a split without labels has none (its label file holds no array)
    split.write_split(root / "volume.tif", root / "meta.json", "c", 0.5, 0, tmp_path / "in2")
    with np.load(tmp_path / "in2" / split.TRAIN_LABELS) as z:
        assert z.files == []
    assert split.read_train(tmp_path / "in2").labels is None


def test_split_refuses_bad_or_tampered_labels(ds, tmp_path):
    root, vol, lab = ds
    io.write_volume(tmp_path / "short.tif", lab[:-1])
    with pytest.raises(VolbenchError, match="has shape"):
        split.write_split(root / "volume.tif", root / "meta.json", "c", 0.5, 0, tmp_path / "a",
                          labels_path=tmp_path / "short.tif")
    io.write_volume(tmp_path / "big.tif", (lab * 5).astype(np.uint8))
    with pytest.raises(VolbenchError, match="outside 0..1"):
        split.write_split(root / "volume.tif", root / "meta.json", "c", 0.5, 0, tmp_path / "b",
                          labels_path=tmp_path / "big.tif")
    split.write_split(root / "volume.tif", root / "meta.json", "c", 0.5, 0, tmp_path / "c",
                      labels_path=root / "labels.tif")
    with np.load(tmp_path / "c" / split.TRAIN_LABELS) as z:
        t = z["labels"]
    np.savez(tmp_path / "c" / split.TRAIN_LABELS, labels=1 - t)
    with pytest.raises(VolbenchError, match="checksum"):
        split.read_train(tmp_path / "c")


def test_semantic_metrics_by_hand():
    truth = np.array([[0, 0, 1, 1], [0, 2, 2, 1]])
    pred = np.array([[0, 1, 1, 1], [0, 2, 0, 1]])
    d = score.dice_per_class(pred, truth, 4)
    assert d[0] == pytest.approx(2 * 2 / (3 + 3))
    assert d[1] == pytest.approx(2 * 3 / (4 + 3))
    assert d[2] == pytest.approx(2 * 1 / (1 + 2))
    assert np.isnan(d[3])
    onehot = np.stack([(truth == k) for k in range(3)]).astype(float)
    assert score.semantic_loss(onehot, truth) == 0.0
    assert score.semantic_loss(np.full((3, 2, 4), 1 / 3), truth) == pytest.approx(np.mean((1 / 3 - onehot) ** 2))
    lab = np.arange(6)[:, None, None] * np.ones((1, 2, 2), int)
    assert score.nearest_labels(lab, [0, 3, 5], [1, 2, 4])[:, 0, 0].tolist() == [0, 3, 3]


def test_axis_cameras_put_a_gaussian_where_the_voxel_is():
    """One isotropic Gaussian at voxel (k, j, i): its peak is at pixel (j, i) of axial slice k,
    (k, i) of coronal slice j and (k, j) of sagittal slice i, with the same value."""
    from volbench.gaussian_ops.composite import composite_slices

    sp = (2.0, 0.5, 0.75)
    shape = (9, 12, 10)
    k, j, i = 4, 7, 3
    mean = torch.tensor([[k * sp[0], j * sp[1], i * sp[2]]], dtype=torch.float64)
    ls = torch.log(torch.tensor([[1.0, 1.0, 1.0]], dtype=torch.float64))
    q = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64)
    op = torch.tensor([0.8], dtype=torch.float64)
    col = torch.tensor([1.0], dtype=torch.float64)
    peaks = {}
    for axis, pos, pix in (("axial", k, (j, i)), ("coronal", j, (k, i)), ("sagittal", i, (k, j))):
        n, img_shape, ps = composite_fit.axis_geometry(axis, shape, sp)
        assert n == shape[("axial", "coronal", "sagittal").index(axis)]
        cams = composite_fit.axis_cameras(axis, [pos], sp, dtype=torch.float64)
        img = composite_slices(mean, ls, q, op, col, cams, img_shape, ps).image[0]
        assert tuple(img.shape) == img_shape
        assert tuple(int(v) for v in np.unravel_index(int(img.argmax()), img_shape)) == pix
        peaks[axis] = float(img.max())
    assert peaks["axial"] == pytest.approx(0.8) and peaks["coronal"] == pytest.approx(0.8)
    assert peaks["sagittal"] == pytest.approx(0.8)


def test_triplane_attributes_are_a_function_of_position():
    """The tri-plane method decodes intensity, opacity and semantics from the planes at the mean:
    two Gaussians at one position get the same attributes (whatever their free parameters)."""
    m = composite_fit.TriPlaneSparse(**FAST)
    gen = torch.Generator().manual_seed(0)
    field = composite_fit.TriPlane((6, 8, 8), (5.0, 7.0, 7.0), 4, 1.0, 16, 2, 2 + 3 + 3, gen, "cpu")
    g = {"means": torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [4.0, 1.0, 6.0]]),
         "log_scales": torch.zeros(3, 3), "quats": torch.tensor([[1.0, 0, 0, 0], [0.9, 0.1, 0, 0], [1, 0, 0, 0]])}
    _, ls, _, op, col, sem = m._attributes(g, field, 3, -10.0)
    assert torch.equal(op[0], op[1]) and torch.equal(col[0], col[1]) and torch.equal(sem[0], sem[1])
    assert not torch.equal(col[0], col[2])
    assert torch.allclose(sem.sum(1), torch.ones(3))
    # the planes are where the information lives: changing one changes the decoded colour
    with torch.no_grad():
        field.planes[0].add_(1.0)
    assert not torch.equal(m._attributes(g, field, 3, -10.0)[4], col)


@pytest.mark.parametrize("kind", ["innergs", "triplane"])
def test_composite_methods_fit_render_axes_and_semantics(ds, tmp_path, kind):
    root, vol, lab = ds
    rec = run.fit_cell(root / "input", kind, dict(FAST), tmp_path / kind, seed=3, device="cpu")
    assert rec["status"] == "ok" and rec["stats"]["n_classes"] == 2
    r = run.read_renders(tmp_path / kind)
    t = split.read_train(root / "input")
    assert list(r["axial"]["index"]) == t.test_z.tolist()
    assert r["coronal"]["image"].shape == (32, 10, 28) and r["sagittal"]["image"].shape == (28, 10, 32)
    assert r["axial"]["semantics"].shape == (len(t.test_z), 2, 32, 28)
    np.testing.assert_array_equal(r["axial"]["image"], run.read_prediction(tmp_path / kind))
    s = r["axial"]["semantics"]
    assert np.all(s >= 0) and np.all(s.sum(1) <= 1.0 + 1e-3)
    # deterministic: the same seed gives the same files
    run.fit_cell(root / "input", kind, dict(FAST), tmp_path / "again", seed=3, device="cpu")
    assert (tmp_path / "again" / run.PREDICTION).read_bytes() == (tmp_path / kind / run.PREDICTION).read_bytes()


def test_training_learns_intensity_and_labels(ds, tmp_path):
    """A longer fit reproduces its training slices and their labels (it is not a stub)."""
    root, vol, lab = ds
    p = {**FAST, "iterations": 120, "n_gaussians": 400}
    rec = run.fit_cell(root / "input", "innergs", p, tmp_path / "m", seed=0, device="cpu")
    io.write_json(tmp_path / "m" / run.FIT_JSON, rec)
    assert rec["fit_psnr"] > 24
    sc = score.score_split(root / "volume.tif", root / "input", {"m": tmp_path / "m"}, lpips_cfg={"enabled": False},
                           labels_path=root / "labels.tif")
    row = sc["methods"]["m"]
    assert row["dice"][1] > 0.5, row["dice"]
    assert set(row["axes"]) == {"axial", "coronal", "sagittal"}
    assert row["axes"]["axial"]["psnr_mean"] == pytest.approx(row["psnr_mean"])


def test_scores_table_and_figure_with_semantics(ds, tmp_path):
    root, vol, lab = ds
    dirs = {}
    for kind in ("nearest", "innergs", "triplane"):
        dirs[kind] = tmp_path / kind
        io.write_json(tmp_path / kind / run.FIT_JSON,
                      run.fit_cell(root / "input", kind, {} if kind == "nearest" else dict(FAST), tmp_path / kind,
                                   device="cpu"))
    sc = score.score_split(root / "volume.tif", root / "input", dirs, lpips_cfg={"enabled": False},
                           labels_path=root / "labels.tif")
    assert sc["classes"] == ["background", "nucleus"] and len(sc["dice_nearest_labels"]) == 2
    assert "axes" not in sc["methods"]["nearest"]
    for kind in ("innergs", "triplane"):
        axes = sc["methods"][kind]["axes"]
        assert axes["coronal"]["n_slices"] == 32 and axes["sagittal"]["n_slices"] == 28
        assert 0 <= axes["axial"]["semantic_loss_mean"] <= 1
    io.write_json(tmp_path / "scores.json", sc)
    rows = table_axes.write_table([tmp_path / "scores.json"], tmp_path / "t23")
    ours = [r for r in rows if r["source"] == "volbench"]
    assert [(r["method"], r["axis"]) for r in ours] == [(m, a) for m in ("innergs", "triplane")
                                                        for a in ("axial", "coronal", "sagittal")]
    assert json.loads(ours[0]["dice"])[1] == pytest.approx(sc["methods"]["innergs"]["dice"][1])
    md = (tmp_path / "t23.md").read_text()
    assert "Semantic loss" in md and "nucleus" in md and "| Coronal |" in md
    out = figure.draw(root / "volume.tif", [tmp_path / "scores.json"], {"0.5": {k: str(v) for k, v in dirs.items()}},
                      tmp_path / "fig", labels_path=root / "labels.tif")
    assert all(p.stat().st_size > 1000 for p in out)
    # the training curves against the held-out PSNR: the trained methods' histories are drawn
    tr = figure.draw_training([tmp_path / "scores.json"], {"0.5": {k: str(v) for k, v in dirs.items()}},
                              tmp_path / "train")
    assert all(p.stat().st_size > 1000 for p in tr)
    series = figure.training_series(sc, {k: str(v) for k, v in dirs.items()})
    assert list(series) == ["InnerGS", "Tri-plane 3DGS"]  # trained methods only, in the config's order
    it, ps, held = series["InnerGS"]
    assert it[0] == 1 and it[-1] == FAST["iterations"] and len(ps) == len(it)
    assert held == pytest.approx(sc["methods"]["innergs"]["psnr_mean"])
    # many methods: the figure stays about 2,000 px wide (columns narrow instead of growing)
    many = {**sc, "methods": {f"m{i}": sc["methods"]["nearest"] for i in range(12)},
            "method_order": [f"m{i}" for i in range(12)]}
    io.write_json(tmp_path / "many.json", many)
    png = figure.draw(root / "volume.tif", [tmp_path / "many.json"],
                      {"0.5": {f"m{i}": str(dirs["nearest"]) for i in range(12)}}, tmp_path / "many")[0]
    from PIL import Image

    assert Image.open(png).size[0] <= 2000


def test_parameters_are_checked():
    with pytest.raises(VolbenchError, match="n_gaussians"):
        composite_fit.InnerGSSparse(n_gaussians=0)
    with pytest.raises(VolbenchError, match="mode"):
        composite_fit.TriPlaneSparse(mode="max")
    with pytest.raises(VolbenchError, match="unknown"):
        composite_fit.TriPlaneSparse(bogus=1)
