"""Optional label (segmentation) volumes of datasets: the `labels:` entry of a dataset.

A dataset's labels are an integer volume of the canonical volume's shape, one class per voxel
(value k = class k, at most MAX_CLASSES classes), written by the prepare step as
``results/data/<dataset>/labels.tif`` (uint8, axes Z, Y, X) and described by the ``labels`` entry
of ``meta.json``::

    "labels": {"file": "labels.tif", "classes": [names, index = value], "n_classes": K,
               "dtype": "uint8", "voxels": [voxels of each class], "sha256": "...",
               "source": {"kind": "synthetic" | "path" | "url", ...}}

(``"labels": null`` for a dataset without labels; no labels.tif is written for it). The codecs
never see the labels: they compress volume.tif only.

Config (``datasets.<name>.labels``):

* synthetic datasets: the generator's labels (synthetic.py), on unless ``labels: false``
  (``labels: true`` says it explicitly).
* file datasets (``path:`` / ``url:``): none unless ``labels:`` names the label file: a string (a
  local path), or ``{path: ...}``, ``{url: ..., sha256: ..., member: ..., allow_http: ...}``, or
  ``{member: ...}`` alone on a ``url:`` dataset (a member of the dataset's own archive: same url
  and sha256); with optional ``format``, ``key``, ``raw`` (how to read the label file; not taken
  from the dataset), ``axes`` (default: the dataset's ``axes:``) and ``classes`` (class names,
  index = label value; default ``class_0`` .. ``class_<max>``). The label file goes through the
  volume's canonicalisation (axes, channel, scan_axis, crop; ``downsample`` takes each block's
  most frequent class, ties to the smaller value) and must then have the volume's shape.

The rules use has_labels(config, dataset), labels_path(dataset), label_input(config, dataset)
and fetch_entry(config, dataset, file); consumers of prepared data read_labels(data_dir).
"""

from __future__ import annotations

import posixpath
from pathlib import Path

import numpy as np

from ..errors import VolbenchError

MAX_CLASSES = 64
LABELS_FILE = "labels.tif"
# the folder under resources/downloads/<dataset>/ that holds a dataset's label download
DOWNLOAD_DIR = "labels"

_FILE_KEYS = ("path", "url", "member")


def labels_path(dataset: str, results: str = "results") -> str:
    """Where the prepare step writes a dataset's labels: results/data/<dataset>/labels.tif."""
    return f"{results}/data/{dataset}/{LABELS_FILE}"


def spec(name: str, entry: dict) -> dict | None:
    """The normalised `labels:` of a dataset entry, or None when it has none.

    {"kind": "synthetic"} for a synthetic dataset's own labels; {"kind": "path", "path", ...} or
    {"kind": "url", "url", "sha256", "member", "allow_http", ...} for a label file (with its
    format/key/raw/axes/classes where given). Raises VolbenchError naming the key on a bad entry."""
    where = f"datasets.{name}.labels"
    raw = entry.get("labels")
    synthetic = "synthetic" in entry
    if raw is None:
        return {"kind": "synthetic"} if synthetic else None
    if raw is False:
        return None
    if synthetic:
        if raw is True:
            return {"kind": "synthetic"}
        raise VolbenchError(f"{where}: a synthetic dataset's labels are its generator's; use `labels: true` or "
                            "`labels: false`, not a label file")
    if raw is True:
        raise VolbenchError(f"{where}: `labels: true` is for synthetic datasets; name the label file "
                            "(`labels: {path: seg.tif}`, or url/sha256, or member of the dataset's archive)")
    if isinstance(raw, str):
        raw = {"path": raw}
    if not isinstance(raw, dict):
        raise VolbenchError(f"{where}: expected true/false, a path or a mapping, got {raw!r}")
    out = {k: raw[k] for k in ("format", "key", "raw", "axes") if raw.get(k) is not None}
    classes = raw.get("classes")
    if classes is not None:
        if (not isinstance(classes, list) or not classes
                or not all(isinstance(c, str) and c for c in classes)):
            raise VolbenchError(f"{where}.classes: a list of class names (index = label value), got {classes!r}")
        if len(set(classes)) != len(classes):
            raise VolbenchError(f"{where}.classes: class names must be distinct, got {classes}")
        if len(classes) > MAX_CLASSES:
            raise VolbenchError(f"{where}.classes: {len(classes)} names, at most {MAX_CLASSES} classes are supported")
        out["classes"] = list(classes)
    given = [k for k in _FILE_KEYS if raw.get(k)]
    if "path" in given:
        if len(given) > 1:
            raise VolbenchError(f"{where}: give either path or url (with member), has {', '.join(given)}")
        return {"kind": "path", "path": str(raw["path"]), **out}
    if "url" in given:
        url, sha = str(raw["url"]), raw.get("sha256")
        if not sha:
            raise VolbenchError(f"{where}: a url needs its sha256 ({where}.sha256)")
        allow_http = bool(raw.get("allow_http", False))
    elif "member" in given:
        if "url" not in entry:
            raise VolbenchError(f"{where}.member: a member of the dataset's archive needs a `url:` dataset; "
                                "give the label file's path or url")
        url, sha, allow_http = str(entry["url"]), entry.get("sha256"), bool(entry.get("allow_http", False))
    else:
        raise VolbenchError(f"{where}: name the label file: path, url (with sha256), or member (of the "
                            "dataset's archive)")
    if not (url.startswith("https://") or url.startswith("file://") or (allow_http and url.startswith("http://"))):
        raise VolbenchError(f"{where}.url: {url} is not https; use https or set allow_http: true")
    return {"kind": "url", "url": url, "sha256": str(sha), "member": raw.get("member"),
            "allow_http": allow_http, **out}


def has_labels(config: dict, dataset: str) -> bool:
    """Whether the dataset of this config has labels (its prepare step writes labels.tif)."""
    return spec(dataset, config["datasets"][dataset]) is not None


def labeled_datasets(config: dict) -> list[str]:
    """The datasets of a config that have labels, in config order (every entry is checked)."""
    return [d for d, e in config.get("datasets", {}).items() if spec(d, e) is not None]


def download_path(dataset: str, lspec: dict) -> str:
    """Where the fetch rule puts a url label file: resources/downloads/<dataset>/labels/<name>."""
    name = posixpath.basename(str(lspec.get("member") or lspec["url"]).rstrip("/").split("?")[0])
    return f"resources/downloads/{dataset}/{DOWNLOAD_DIR}/{name or 'download'}"


def source_file(dataset: str, entry: dict) -> str | None:
    """The local label file the prepare step reads (a `path:`, or the download), None for none
    or synthetic labels. Relative paths are relative to the working directory."""
    s = spec(dataset, entry)
    if s is None or s["kind"] == "synthetic":
        return None
    return s["path"] if s["kind"] == "path" else download_path(dataset, s)


def label_input(config: dict, dataset: str) -> list[str]:
    """The prepare step's extra input: the dataset's label file, [] when it has none."""
    f = source_file(dataset, config["datasets"][dataset])
    return [f] if f else []


def is_label_download(file: str) -> bool:
    """Whether a `{file}` of resources/downloads/<dataset>/{file} is a label download."""
    return file.startswith(DOWNLOAD_DIR + "/")


def fetch_entry(config: dict, dataset: str, file: str) -> dict:
    """The entry the fetch rule downloads for resources/downloads/<dataset>/<file>: the dataset's
    own, or, for its label download, {url, sha256, member, allow_http} of the label file."""
    entry = config["datasets"][dataset]
    if not is_label_download(file):
        return entry
    s = spec(dataset, entry)
    if s is None or s["kind"] != "url":
        raise VolbenchError(f"dataset {dataset}: {file} is not a label download of this dataset")
    return {k: s[k] for k in ("url", "sha256", "member", "allow_http") if s.get(k) is not None}


# -- reading and checking a label file -------------------------------------------------------------
def to_class_array(name: str, arr: np.ndarray, file: str) -> np.ndarray:
    """Check a label array read from `file` (integer, or float with integral values; no negative
    value; values < MAX_CLASSES) and return it as uint8."""
    what = f"dataset {name}: label file {file}"
    arr = np.asarray(arr)
    if arr.dtype.kind == "b":
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            raise VolbenchError(f"{what} has {int(np.count_nonzero(~finite))} NaN/Inf voxels; labels are class "
                                "indices: save them as an integer type")
        frac = arr != np.round(arr)
        if frac.any():
            raise VolbenchError(f"{what} holds non-integral values (e.g. {float(arr[frac].flat[0])!r}); labels are "
                                "class indices 0, 1, 2, ...: save them as an integer type (uint8/uint16)")
    elif arr.dtype.kind not in "ui":
        raise VolbenchError(f"{what} has dtype {arr.dtype.name}; labels are class indices: save them as "
                            "uint8 or uint16")
    if arr.size == 0:
        raise VolbenchError(f"{what} is empty (shape {arr.shape}); check the label file")
    lo, hi = arr.min(), arr.max()
    if lo < 0:
        raise VolbenchError(f"{what} holds negative values (min {lo}); labels are class indices 0, 1, 2, ...: "
                            "map them to non-negative classes (0 = background)")
    if hi >= MAX_CLASSES:
        raise VolbenchError(f"{what} holds values up to {int(hi)}, more than the {MAX_CLASSES} classes supported "
                            f"(values 0..{MAX_CLASSES - 1}); an instance segmentation? map its instances to "
                            "classes first")
    return arr.astype(np.uint8)


def block_mode(arr: np.ndarray, factors) -> np.ndarray:
    """Downsample a label volume (shape a multiple of factors) by each block's most frequent
    value; a tie goes to the smaller value."""
    f = [int(v) for v in factors]
    out_shape = tuple(n // v for n, v in zip(arr.shape, f))
    blocks = arr.reshape(out_shape[0], f[0], out_shape[1], f[1], out_shape[2], f[2])
    best = np.zeros(out_shape, arr.dtype)
    best_n = np.full(out_shape, -1, np.int64)
    for v in np.unique(arr):  # ascending: strict > keeps the smaller value on a tie
        n = np.count_nonzero(blocks == v, axis=(1, 3, 5))
        take = n > best_n
        best[take] = v
        best_n[take] = n[take]
    return best


def load(name: str, entry: dict, lspec: dict, volume_shape, file: str | None = None):
    """Read, canonicalise and check a dataset's label file: (uint8 labels in the canonical
    axes, class names, provenance). `file` overrides where the file is (default source_file)."""
    from . import readers
    from .fetch import sha256_of
    from .prepare import canonicalise

    path = Path(file or source_file(name, entry))
    where = "`labels.path:`" if lspec["kind"] == "path" else "the labels' url/member (the fetch step puts it there)"
    if not path.exists():
        raise VolbenchError(f"dataset {name}: label file {path} does not exist; fix {where} in the config")
    arr, axes = readers.read(path, lspec.get("format"), f"{name} (labels)", key=lspec.get("key"),
                             raw=lspec.get("raw"))
    arr = to_class_array(name, arr, path.name)
    lentry = dict(entry)
    if lspec.get("axes"):
        lentry["axes"] = lspec["axes"]
    arr = canonicalise(f"{name} (labels {path.name})", arr, axes, lentry, labels=True)
    if tuple(arr.shape) != tuple(volume_shape):
        raise VolbenchError(
            f"dataset {name}: label file {path.name} has shape {tuple(arr.shape)} after canonicalisation, the "
            f"volume {tuple(volume_shape)}; the label file must have the volume's shape and axes (set "
            "`labels.axes:` when its axes differ from the volume's; crop and downsample apply to both)")
    classes = class_names(name, arr, lspec.get("classes"), path.name)
    prov = {"kind": lspec["kind"], "file": path.name}
    if lspec["kind"] == "url":
        prov.update({"url": lspec["url"], "member": lspec.get("member")})
    if path.is_file():
        prov["sha256"] = sha256_of(path)
    return arr, classes, prov


def class_names(name: str, arr: np.ndarray, classes: list[str] | None, file: str) -> list[str]:
    hi = int(arr.max()) if arr.size else 0
    if classes is None:
        return [f"class_{k}" for k in range(hi + 1)]
    if hi >= len(classes):
        raise VolbenchError(f"dataset {name}: label file {file} holds value {hi}, but `labels.classes:` names "
                            f"{len(classes)} classes (values 0..{len(classes) - 1}); name every class")
    return list(classes)


def meta_entry(arr: np.ndarray, classes: list[str], prov: dict) -> dict:
    """The `labels` entry of meta.json (without the file's sha256, added once written)."""
    return {
        "file": LABELS_FILE,
        "classes": list(classes),
        "n_classes": len(classes),
        "dtype": arr.dtype.name,
        "voxels": np.bincount(arr.ravel(), minlength=len(classes)).astype(int).tolist(),
        "source": prov,
    }


def read_labels(data_dir: str | Path) -> tuple[np.ndarray, dict] | None:
    """(labels, meta.json's labels entry) of a prepared dataset folder (results/data/<dataset>),
    or None when the dataset has no labels."""
    from .. import io

    data_dir = Path(data_dir)
    info = io.read_json(data_dir / "meta.json").get("labels")
    if not info:
        return None
    arr = io.read_volume(data_dir / info["file"])
    return arr, info
