"""Readers by format: TIFF/OME-TIFF, NIfTI, HDF5, Zarr, raw. Each returns a numpy array in
the source's own axis order; the canonical step (prepare.py) reorders it."""

from __future__ import annotations

import logging

from pathlib import Path

import numpy as np

from ..errors import VolbenchError

FORMATS = ("tiff", "nifti", "hdf5", "zarr", "raw", "npy")

_EXT = {
    ".tif": "tiff", ".tiff": "tiff", ".ome.tif": "tiff", ".ome.tiff": "tiff",
    ".nii": "nifti", ".nii.gz": "nifti",
    ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5",
    ".zarr": "zarr", ".raw": "raw", ".bin": "raw", ".npy": "npy",
}


def guess_format(path: str | Path) -> str | None:
    name = str(path).lower().rstrip("/")
    for ext in sorted(_EXT, key=len, reverse=True):
        if name.endswith(ext):
            return _EXT[ext]
    return None


def read(path: str | Path, fmt: str | None, dataset: str, key: str | None = None,
         raw: dict | None = None) -> tuple[np.ndarray, str | None]:
    """Return (array, axes string from the file's metadata or None)."""
    path = Path(path)
    fmt = fmt or guess_format(path)
    if fmt is None:
        raise VolbenchError(f"dataset {dataset}: cannot tell the format of {path.name}; set `format:` to one of {list(FORMATS)}")
    if not path.exists():
        raise VolbenchError(f"dataset {dataset}: file {path} does not exist; fix `path:` in the config")
    try:
        return _READERS[fmt](path, key=key, raw=raw, dataset=dataset)
    except VolbenchError:
        raise
    except Exception as exc:  # library errors on unreadable or truncated files
        raise VolbenchError(
            f"dataset {dataset}: cannot read {path.name} as {fmt} ({type(exc).__name__}: {exc}); "
            "check that the file is complete and `format:` is right"
        ) from None


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _tiff(path, dataset="?", **_):
    import tifffile

    # tifffile logs damaged tags and pages and reads on; a damaged file must fail instead, with
    # one message, not a page of library log lines
    log = logging.getLogger("tifffile")
    handler, propagate = _Collect(), log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        with tifffile.TiffFile(path) as tf:
            series = tf.series[0]
            arr = series.asarray()
            axes = series.axes
    finally:
        log.removeHandler(handler)
        log.propagate = propagate
    if handler.messages:
        raise VolbenchError(f"dataset {dataset}: {path.name} is damaged or truncated ({handler.messages[0]}); "
                            "copy the file again")
    return np.asarray(arr), axes


def _nifti(path, **_):
    import nibabel as nib

    img = nib.load(str(path))
    arr = np.asarray(img.dataobj)
    # NIfTI stores X, Y, Z(, T)
    axes = "XYZ" if arr.ndim == 3 else "XYZT"[: arr.ndim]
    return arr, axes


def _hdf5(path, key=None, dataset="?", **_):
    import h5py

    with h5py.File(path, "r") as fh:
        if key is None:
            keys = []
            fh.visititems(lambda n, o: keys.append(n) if isinstance(o, h5py.Dataset) else None)
            if len(keys) != 1:
                raise VolbenchError(f"dataset {dataset}: {path.name} holds {len(keys)} arrays {keys[:8]}; set `key:`")
            key = keys[0]
        if key not in fh:
            raise VolbenchError(f"dataset {dataset}: {path.name} has no key {key!r}; fix `key:`")
        return np.asarray(fh[key][...]), None


def _zarr(path, key=None, dataset="?", **_):
    import zarr

    root = zarr.open(str(path), mode="r")
    node = root[key] if key else root
    if not hasattr(node, "shape"):
        raise VolbenchError(f"dataset {dataset}: {path.name} is a Zarr group; set `key:` to an array in it")
    return np.asarray(node[...]), None


def _raw(path, raw=None, dataset="?", **_):
    if not raw or "shape" not in raw or "dtype" not in raw:
        raise VolbenchError(f"dataset {dataset}: raw file {path.name} needs `raw: {{shape: [...], dtype: ...}}`")
    shape = tuple(int(s) for s in raw["shape"])
    dtype = np.dtype(raw["dtype"])
    offset = int(raw.get("offset", 0))
    need = offset + int(np.prod(shape)) * dtype.itemsize
    have = path.stat().st_size
    if have < need:
        raise VolbenchError(f"dataset {dataset}: raw file {path.name} has {have} bytes, shape/dtype need {need}; "
                            "the file is truncated or `raw:` is wrong")
    arr = np.fromfile(path, dtype=dtype, count=int(np.prod(shape)), offset=offset)
    return arr.reshape(shape, order=raw.get("order", "C")), None


def _npy(path, **_):
    return np.load(path, allow_pickle=False), None


_READERS = {"tiff": _tiff, "nifti": _nifti, "hdf5": _hdf5, "zarr": _zarr, "raw": _raw, "npy": _npy}
