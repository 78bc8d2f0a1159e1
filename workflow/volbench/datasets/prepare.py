"""The canonical step: one dataset config entry -> results/data/{dataset}/volume.tif + meta.json
(+ labels.tif for a dataset with labels, labels.py).

The canonical volume keeps the original dtype; its axes are (Z, Y, X) with Z the scan (slice)
axis. Reordering, channel selection, crop and downsampling happen here and nowhere else; a
dataset's labels go through the same steps (downsampled by block mode instead of block mean).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import io
from ..errors import VolbenchError
from . import labels as labels_mod, readers, synthetic
from .fetch import sha256_of

SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "float32")


def source_kind(entry: dict) -> str:
    kinds = [k for k in ("synthetic", "path", "url") if k in entry]
    if len(kinds) != 1:
        raise VolbenchError(f"dataset entry needs exactly one of synthetic/path/url, has {kinds}")
    return kinds[0]


def load_source(name: str, entry: dict, source_file: str | None = None) -> tuple[np.ndarray, str | None, dict]:
    """Return (array in source axes, axes string or None, provenance dict)."""
    kind = source_kind(entry)
    if kind == "synthetic":
        arr = synthetic.generate(entry["synthetic"], name)
        return arr, "ZYX", {"kind": "synthetic", **entry["synthetic"]}
    path = Path(source_file or entry["path"])
    arr, axes = readers.read(path, entry.get("format"), name, key=entry.get("key"), raw=entry.get("raw"))
    prov = {"kind": kind, "file": path.name}
    if kind == "url":
        prov.update({"url": entry["url"], "member": entry.get("member")})
    if path.is_file():
        prov["sha256"] = sha256_of(path)
    return arr, axes, prov


def canonicalise(name: str, arr: np.ndarray, axes: str | None, entry: dict, labels: bool = False) -> np.ndarray:
    """The canonical (Z, Y, X) array of a source array; labels=True for a label volume (the same
    steps, but `downsample` takes each block's most frequent class instead of its mean)."""
    file_axes = axes
    axes = (entry.get("axes") or axes or "").upper()
    if arr.ndim < 3:
        raise VolbenchError(
            f"dataset {name}: expected a 3D volume, got a {arr.ndim}D array of shape {arr.shape}; "
            "volbench compresses volumes, stack the images into one file"
        )
    if len(axes) != arr.ndim:
        if arr.ndim == 3:
            axes = "ZYX"
        else:
            raise VolbenchError(
                f"dataset {name}: a {arr.ndim}D array of shape {arr.shape} where 3D is expected; set `axes:` "
                "(e.g. ZCYX) and `channel:` to pick one channel"
            )
    # tifffile names the stacking axis of a plain multi-page TIFF Q (unknown) or I (image
    # sequence): with no Z axis in the file, that axis is the depth axis
    if "Z" not in axes and not entry.get("axes"):
        if arr.ndim == 3 and axes.endswith("YX"):
            axes = "ZYX"  # e.g. QYX, IYX, or SYX (tifffile's guess for a short stack)
        else:
            for code in "IQ":
                if code in axes:
                    axes = axes.replace(code, "Z", 1)
                    break
    # drop singleton axes other than Z/Y/X, pick the channel
    sel = []
    keep = ""
    for i, ax in enumerate(axes):
        if ax in "ZYX":
            sel.append(slice(None))
            keep += ax
        elif ax in "CS" and "channel" in entry:
            ch = int(entry["channel"])
            if not 0 <= ch < arr.shape[i]:
                raise VolbenchError(f"dataset {name}: channel {ch} out of range, the volume has {arr.shape[i]} channels (axes {axes})")
            sel.append(ch)
        elif arr.shape[i] == 1:
            sel.append(0)
        elif ax in "CS":
            raise VolbenchError(
                f"dataset {name}: multichannel volume (axes {axes}, shape {arr.shape}); set `channel:` to one of 0..{arr.shape[i] - 1}"
            )
        else:
            hint = "set `axes:` to name each axis of the file (e.g. ZCYX) and `channel:` to pick one channel"
            if "channel" in entry and not any(a in "CS" for a in axes):
                hint += f" (`channel: {entry['channel']}` needs a C axis in `axes:`)"
            if ax in "QI" and not entry.get("axes"):  # tifffile's codes for an axis the file does not name
                raise VolbenchError(
                    f"dataset {name}: a {arr.ndim}D array of shape {arr.shape} whose file does not say what its "
                    f"axis of size {arr.shape[i]} is (axes read as {file_axes}); {hint}"
                )
            raise VolbenchError(
                f"dataset {name}: extra axis {ax!r} of size {arr.shape[i]} (axes {axes}); {hint}, or crop the file "
                "to one 3D volume"
            )
    arr = arr[tuple(sel)]
    if sorted(keep) != sorted("ZYX"):
        raise VolbenchError(f"dataset {name}: axes {axes!r} must contain Z, Y and X once each")
    scan = str(entry.get("scan_axis", "Z")).upper()
    if scan not in "ZYX":
        raise VolbenchError(f"dataset {name}: scan_axis must be one of Z, Y, X, got {scan!r}")
    rest = [a for a in "ZYX" if a != scan]
    order = [keep.index(scan)] + [keep.index(a) for a in rest]
    arr = np.transpose(arr, order)
    if arr.size == 0:
        raise VolbenchError(f"dataset {name}: the volume is empty (shape {arr.shape}); check the source file")
    crop = entry.get("crop") or {}
    sl = []
    for ax, n in zip("zyx", arr.shape):
        a, b = crop.get(ax, [0, n])
        if not (0 <= a < b <= n):
            raise VolbenchError(f"dataset {name}: crop {ax}: [{a}, {b}] outside the volume's size {n} along {ax}")
        sl.append(slice(int(a), int(b)))
    arr = arr[tuple(sl)]
    ds = entry.get("downsample")
    if ds:
        f = [int(v) for v in ds]
        if any(v < 1 for v in f):
            raise VolbenchError(f"dataset {name}: downsample factors must be >= 1, got {ds}")
        if any(v > 1 for v in f):
            shp = [n // v * v for n, v in zip(arr.shape, f)]
            if labels:
                return np.ascontiguousarray(labels_mod.block_mode(arr[: shp[0], : shp[1], : shp[2]], f))
            a = arr[: shp[0], : shp[1], : shp[2]].astype(np.float64)
            a = a.reshape(shp[0] // f[0], f[0], shp[1] // f[1], f[1], shp[2] // f[2], f[2]).mean(axis=(1, 3, 5))
            arr = np.rint(a).astype(arr.dtype) if arr.dtype.kind in "ui" else a.astype(arr.dtype)
    return np.ascontiguousarray(arr)


def validate(name: str, arr: np.ndarray) -> None:
    if arr.dtype.name not in SUPPORTED_DTYPES:
        hint = "convert it to float32" if arr.dtype.kind in "fc" else "convert it to uint16 (or uint8)"
        raise VolbenchError(f"dataset {name}: unsupported dtype {arr.dtype.name} (supported: {', '.join(SUPPORTED_DTYPES)}); {hint}")
    if arr.size == 0 or min(arr.shape) == 0:
        raise VolbenchError(f"dataset {name}: the volume is empty (shape {arr.shape}); check crop and the source file")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise VolbenchError(f"dataset {name}: {bad} NaN/Inf voxels; clean or mask them in the source file first")


def prepare(name: str, entry: dict, out_dir: str | Path, source_file: str | None = None,
            labels_file: str | None = None) -> dict[str, Any]:
    """Write out_dir/volume.tif, meta.json and, for a dataset with labels, labels.tif.

    Everything is read and checked before the first file is written; each file is written
    atomically (labels, volume, then meta.json), and on any failure none of the three is left
    (a stale labels.tif of a dataset that no longer has labels is removed too).
    `labels_file` overrides where the label file is (default: labels.source_file)."""
    out_dir = Path(out_dir)
    outputs = [out_dir / labels_mod.LABELS_FILE, out_dir / "volume.tif", out_dir / "meta.json"]
    try:
        return _prepare(name, entry, out_dir, source_file, labels_file)
    except BaseException:
        for f in outputs:
            f.unlink(missing_ok=True)
        raise


def _prepare(name, entry, out_dir, source_file, labels_file):
    lspec = labels_mod.spec(name, entry)
    lab = None
    if lspec is not None and lspec["kind"] == "synthetic":
        gen = dict(entry["synthetic"])
        if gen.get("generator") == "ultrasound" and int(gen.get("n_layers", 4)) + 3 > labels_mod.MAX_CLASSES:
            raise VolbenchError(f"dataset {name}: {int(gen['n_layers']) + 3} label classes for n_layers "
                                f"{gen['n_layers']}, at most {labels_mod.MAX_CLASSES}; lower n_layers or set "
                                "`labels: false`")
        arr, gen_labels, classes = synthetic.generate_with_labels(entry["synthetic"], name)
        axes, prov = "ZYX", {"kind": "synthetic", **entry["synthetic"]}
    else:
        arr, axes, prov = load_source(name, entry, source_file)
    arr = canonicalise(name, arr, axes, entry)
    validate(name, arr)
    spacing = [float(s) for s in entry.get("spacing", [1.0, 1.0, 1.0])]
    if len(spacing) != 3 or min(spacing) <= 0:
        raise VolbenchError(f"dataset {name}: spacing must be three positive numbers [dz, dy, dx], got {spacing}")
    if lspec is not None:
        if lspec["kind"] == "synthetic":
            lab = canonicalise(f"{name} (labels)", gen_labels, "ZYX", entry, labels=True)
            lprov = {"kind": "synthetic", "generator": entry["synthetic"]["generator"]}
        else:
            lab, classes, lprov = labels_mod.load(name, entry, lspec, arr.shape, labels_file)
    lo, hi = float(arr.min()), float(arr.max())
    meta = {
        "name": name,
        "shape": list(arr.shape),
        "dtype": arr.dtype.name,
        "axes": "ZYX",
        "spacing": spacing,
        "sigma_z": float(entry["sigma_z"]) if entry.get("sigma_z") is not None else spacing[0],
        "modality": entry.get("modality", "unknown"),
        "value_min": lo,
        "value_max": hi,
        "constant": lo == hi,
        "original_bytes": int(arr.nbytes),
        "n_voxels": int(arr.size),
        "source": prov,
        "labels": None,
    }
    labels_out = out_dir / labels_mod.LABELS_FILE
    if lab is not None:
        meta["labels"] = labels_mod.meta_entry(lab, classes, lprov)
        io.write_volume(labels_out, lab)
        meta["labels"]["sha256"] = sha256_of(labels_out)
    else:
        labels_out.unlink(missing_ok=True)  # of an earlier run whose config had labels
    io.write_volume(out_dir / "volume.tif", arr)
    meta["volume_sha256"] = sha256_of(out_dir / "volume.tif")
    io.write_json(out_dir / "meta.json", meta)
    return meta
