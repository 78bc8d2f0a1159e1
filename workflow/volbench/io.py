"""Reading and writing canonical volumes and JSON records, atomically."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import VolbenchError


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    try:
        tmp.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=True, allow_nan=True) + "\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_volume(path: str | os.PathLike, vol: np.ndarray) -> None:
    """Write a Z,Y,X volume as an uncompressed TIFF, atomically."""
    import tifffile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    try:
        tifffile.imwrite(tmp, np.ascontiguousarray(vol), metadata={"axes": "ZYX"}, photometric="minisblack")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_volume(path: str | os.PathLike) -> np.ndarray:
    import tifffile

    path = Path(path)
    if not path.exists():
        raise VolbenchError(f"{path}: volume does not exist; run the job that makes it first")
    try:
        vol = tifffile.imread(path)
    except Exception as exc:
        raise VolbenchError(f"{path}: cannot read volume ({exc}); delete it and re-run its job") from None
    if vol.ndim == 2:
        vol = vol[None]
    return vol


def finite_or_none(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x
