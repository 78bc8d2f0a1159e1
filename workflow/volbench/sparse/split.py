"""The held-out split of the sparse-slice task and the training file, the only input of a method.

For a dataset of D axial slices and a fraction f, the training set is n = round(f D) slices
(at least 2, at most D - 1, so that one slice is held out): the first and the last slice always,
plus n - 2 interior slices taken in the order of one seeded permutation of the interior slices.
The permutation depends on the seed and the dataset name only, not on f, so the training sets
of one dataset are nested (25 % within 50 % within 95 %) and differ only in how many slices they
keep. Every other slice is a test (held-out) slice.

Keeping both ends in training makes every test slice an interpolation (never an extrapolation)
problem, for every method alike.

``write_split`` writes ``train.tif`` (the training slices only, stacked in increasing z),
``train_labels.npz`` (the same slices of the dataset's label volume, volbench.datasets.labels, in
its array ``labels``; no array for a dataset without labels) and ``train.json`` (their z indices, the test slices' z indices, the volume's shape, dtype, spacing,
sigma_z and modality; never the volume's value range or anything else computed from a test
slice). ``read_train`` is how a method's job opens them: it checks that the file holds exactly
the listed training slices (count, checksum) and that no index is both training and test.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import io
from ..errors import VolbenchError

TRAIN_TIF = "train.tif"
TRAIN_JSON = "train.json"
TRAIN_LABELS = "train_labels.npz"  # always written (no array in it for a dataset without labels)
KIND = "volbench-sparse-train"
VERSION = 1
#: the meta.json keys a method may know (nothing computed from the voxels)
META_KEYS = ("spacing", "sigma_z", "modality")


def fraction_label(fraction: float) -> str:
    """The folder name of a fraction: 0.25 -> "0.25"."""
    return format(float(fraction), "g")


def n_train_slices(depth: int, fraction: float) -> int:
    """round(fraction x depth) (halves up), within [2, depth - 1]."""
    return min(max(int(math.floor(float(fraction) * depth + 0.5)), 2), depth - 1)


def choose(depth: int, fraction: float, seed: int, dataset: str) -> tuple[list[int], list[int]]:
    """(training z indices, test z indices), both sorted; see the module docstring."""
    depth = int(depth)
    if depth < 3:
        raise VolbenchError(f"dataset {dataset}: the sparse-slice task needs at least 3 axial slices, "
                            f"the volume has {depth}")
    if not 0.0 < float(fraction) < 1.0:
        raise VolbenchError(f"sparse_slices.fractions: {fraction} is not in (0, 1)")
    n = n_train_slices(depth, fraction)
    rng = np.random.default_rng([int(seed) % 2**32, zlib.crc32(dataset.encode("utf-8"))])
    order = rng.permutation(np.arange(1, depth - 1))
    train = sorted({0, depth - 1, *(int(z) for z in order[: n - 2])})
    test = [z for z in range(depth) if z not in set(train)]
    return train, test


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _write_npz(path: Path, arrays: dict) -> None:
    """An .npz (np.load reads it) whose bytes depend on the arrays only (fixed zip dates), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)
    tmp.replace(path)


def write_split(volume_path, meta_path, dataset: str, fraction: float, seed: int, out_dir,
                labels_path=None) -> dict:
    """Write out_dir/train.tif and out_dir/train.json (atomically, the JSON last); with the
    dataset's label volume (``labels_path``, classes from meta.json's "labels" entry), also the
    training slices' labels in out_dir/train_labels.npz (always written: without labels it holds no
    array, so that the file is a fixed output of the split job). Returns the record."""
    out = Path(out_dir)
    vol = io.read_volume(volume_path)
    meta = io.read_json(meta_path)
    if vol.ndim != 3:
        raise VolbenchError(f"dataset {dataset}: the sparse-slice task needs a 3D volume, got shape {vol.shape}")
    train, test = choose(vol.shape[0], fraction, seed, dataset)
    labels_rec = None
    arrays = {}
    if labels_path is not None:
        lab = io.read_volume(labels_path)
        if lab.shape != vol.shape:
            raise VolbenchError(f"dataset {dataset}: {labels_path} has shape {lab.shape}, the volume {vol.shape}; "
                                f"re-run its data preparation")
        info = meta.get("labels") or {}
        n_classes = int(info.get("n_classes") or int(lab.max()) + 1)
        classes = [str(c) for c in (info.get("classes") or [f"class {k}" for k in range(n_classes)])]
        if int(lab.max()) >= n_classes or int(lab.min()) < 0:
            raise VolbenchError(f"dataset {dataset}: {labels_path} holds labels outside 0..{n_classes - 1}")
        arrays["labels"] = np.ascontiguousarray(lab[train])
        labels_rec = {"file": TRAIN_LABELS, "classes": classes, "n_classes": n_classes}
    out.mkdir(parents=True, exist_ok=True)
    _write_npz(out / TRAIN_LABELS, arrays)
    io.write_volume(out / TRAIN_TIF, np.ascontiguousarray(vol[train]))
    rec = {
        "kind": KIND, "version": VERSION, "dataset": dataset, "fraction": float(fraction), "seed": int(seed),
        "shape": [int(s) for s in vol.shape], "dtype": str(vol.dtype),
        **{k: meta.get(k) for k in META_KEYS},
        "train_z": train, "test_z": test, "n_train": len(train), "n_test": len(test),
        "rule": "round(fraction x depth) training slices (2 .. depth-1): the first and the last slice, plus "
                "interior slices in the order of one permutation seeded by (seed, dataset); the rest is held out",
        "train_sha256": _sha256(out / TRAIN_TIF),
        "labels": labels_rec,
        "labels_sha256": _sha256(out / TRAIN_LABELS),
    }
    io.write_json(out / TRAIN_JSON, rec)
    return rec


@dataclass
class TrainSet:
    """What a reconstruction method receives: the training slices and where everything lies."""

    slices: np.ndarray  # (n_train, H, W), the volume's dtype
    z: np.ndarray  # (n_train,) int64, increasing: the training slices' z indices
    test_z: np.ndarray  # (n_test,) int64, increasing: where to reconstruct (positions only)
    shape: tuple[int, int, int]  # the whole volume's (D, H, W)
    dtype: np.dtype
    spacing: tuple[float, float, float]
    sigma_z: float | None
    modality: str
    dataset: str
    fraction: float
    seed: int
    labels: np.ndarray | None = None  # (n_train, H, W) integer class per voxel of the training slices
    classes: list[str] | None = None  # class names (index = label value)

    @property
    def n_classes(self) -> int:
        return len(self.classes or ())

    @property
    def label(self) -> str:
        return fraction_label(self.fraction)


def read_train(in_dir) -> TrainSet:
    """Open a split's training file (a method job's only input), checking it is what it says."""
    d = Path(in_dir)
    jpath, tpath = d / TRAIN_JSON, d / TRAIN_TIF
    if not jpath.exists():
        raise VolbenchError(f"{jpath}: no training split; run its sparse_split job first")
    rec = io.read_json(jpath)
    if rec.get("kind") != KIND or int(rec.get("version", -1)) != VERSION:
        raise VolbenchError(f"{jpath}: not a volbench sparse training split (kind {rec.get('kind')!r})")
    if _sha256(tpath) != rec.get("train_sha256"):
        raise VolbenchError(f"{tpath}: does not match {jpath.name} (checksum); re-run its sparse_split job")
    slices = io.read_volume(tpath)
    train = np.asarray(rec["train_z"], dtype=np.int64)
    test = np.asarray(rec["test_z"], dtype=np.int64)
    shape = tuple(int(s) for s in rec["shape"])
    if slices.shape != (len(train), *shape[1:]):
        raise VolbenchError(f"{tpath}: holds {slices.shape}, {jpath.name} lists {len(train)} slices of "
                            f"{shape[1:]}; re-run its sparse_split job")
    if set(train.tolist()) & set(test.tolist()) or sorted([*train.tolist(), *test.tolist()]) != list(range(shape[0])):
        raise VolbenchError(f"{jpath}: training and test slices overlap or do not cover the volume")
    if np.any(np.diff(train) <= 0) or np.any(np.diff(test) <= 0):
        raise VolbenchError(f"{jpath}: slice indices must increase")
    spacing = tuple(float(s) for s in (rec.get("spacing") or (1.0, 1.0, 1.0)))
    labels = classes = None
    lpath = d / TRAIN_LABELS
    if rec.get("labels_sha256") is not None:
        if not lpath.exists() or _sha256(lpath) != rec["labels_sha256"]:
            raise VolbenchError(f"{lpath}: missing or does not match {jpath.name} (checksum); re-run its sparse_split job")
        if rec.get("labels"):
            with np.load(lpath) as z:
                labels = z["labels"]
            if labels.shape != slices.shape:
                raise VolbenchError(f"{lpath}: holds {labels.shape}, the training slices {slices.shape}; "
                                    f"re-run its sparse_split job")
            classes = [str(c) for c in rec["labels"]["classes"]]
    return TrainSet(labels=labels, classes=classes, slices=slices, z=train, test_z=test, shape=shape, dtype=np.dtype(rec["dtype"]),
                    spacing=spacing, sigma_z=rec.get("sigma_z"), modality=str(rec.get("modality") or "unknown"),
                    dataset=str(rec["dataset"]), fraction=float(rec["fraction"]), seed=int(rec["seed"]))


def heldout_indices(in_dir) -> np.ndarray:
    """The held-out z indices of a split (for scoring)."""
    return np.asarray(io.read_json(Path(in_dir) / TRAIN_JSON)["test_z"], dtype=np.int64)
