"""Reading and writing canonical volumes, JSON records and CSV tables; every write is atomic
(a temporary file in the same folder, then os.replace)."""

from __future__ import annotations

import csv
import io as _stdio
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .errors import VolbenchError


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary path next to `path`, then rename it to `path` (no
    reader ever sees a half-written file); the temporary file is removed if anything fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> Path:
    """Write `data` to `path` atomically; fsync=True also flushes it to disk before the rename."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())

    return atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8, newlines as given) to `path` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=True, allow_nan=True) + "\n")


def write_csv(path: str | os.PathLike, rows: Iterable[dict], fieldnames: list[str]) -> None:
    """Write dict rows as CSV (csv module defaults; missing fields empty), atomically."""
    buf = _stdio.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=fieldnames, restval="")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    atomic_write_text(path, buf.getvalue())


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

    atomic_write(path, lambda tmp: tifffile.imwrite(tmp, np.ascontiguousarray(vol), metadata={"axes": "ZYX"},
                                                    photometric="minisblack"))


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
