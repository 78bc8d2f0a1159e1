"""Which cells a plain rerun must redo, told to Snakemake through the rules' `redo` param.

A cell (dataset x codec x rate point) is three outputs: results/encoded/<cell> (encode.json, and
volume.vbc when the encode worked), results/decoded/<cell> (decode.json, volume.tif) and
results/metrics/<cell>/metrics.json. A failed encode or decode is recorded (status failed) so that
the summary still gets its row, which makes Snakemake count it as done; and Snakemake does not redo
an intermediate output that was deleted while the outputs after it exist. Both would leave a cell
missing or failed for good.

So the encode, decode and score jobs of a cell carry a `redo` param. While the step is whole it is
the value Snakemake stored when the job last ran (nothing at all before a cell was ever redone);
when it is broken (:func:`broken`: an encode or decode that failed, a record without its file, a
folder missing while a later one exists) it is one more than that. A changed param is one
of Snakemake's rerun triggers (``--rerun-triggers params``, on by default), so the next run redoes
the cell's jobs, and Snakemake stores the new value with them: once the cell is whole again the
param equals the stored value and nothing more is redone. A cell that fails again is redone by the
next run again. Nothing is written: the generation lives in Snakemake's own records.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

#: how the param is written (Snakemake stores params as their repr)
_REDO = re.compile(r"^'?volbench-redo-(\d+)'?$")


class _Unset:
    """The param of a cell never redone: not representable, so Snakemake neither stores nor
    compares it (results made before this param existed are not redone for it)."""

    def __repr__(self) -> str:
        return "volbench-redo-0"

    __str__ = __repr__


UNSET = _Unset()


def _record(path: Path) -> dict | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def cell_dirs(root, dataset: str, codec: str, point: str) -> tuple[Path, Path, Path]:
    root = Path(root)
    rel = Path(dataset) / codec / point
    return root / "encoded" / rel, root / "decoded" / rel, root / "metrics" / rel


def broken(root, dataset: str, codec: str, point: str, step: str) -> str:
    """Why `step` (encode, decode or score) of the cell must be redone, '' when it need not.

    encode: its encode failed, its compressed file is gone, or its decode found the file damaged
    (decode.json ``corrupt``); decode: its decode failed, its decoded volume is gone, or it exists
    without the encoded folder; score: metrics.json exists without the encoded or decoded folder.
    The jobs after a redone step are redone by Snakemake itself (their input is updated)."""
    enc, dec, met = cell_dirs(root, dataset, codec, point)
    e, d = _record(enc / "encode.json"), _record(dec / "decode.json")
    if step == "encode":
        if e is not None and e.get("status") != "ok":
            return "its encode failed"
        if e is not None and not (enc / "volume.vbc").exists():
            return f"{enc / 'volume.vbc'} is missing"
        if d is not None and d.get("status") != "ok" and d.get("corrupt"):
            return "its compressed file is damaged"
        return ""
    if step == "decode":
        if d is not None and d.get("status") != "ok":
            return "its decode failed"
        if d is not None and not (dec / "volume.tif").exists():
            return f"{dec / 'volume.tif'} is missing"
        if d is not None and e is None:
            return f"{enc} is missing"
        return ""
    if step == "score":
        if (met / "metrics.json").exists() and (e is None or d is None):
            return f"{enc if e is None else dec} is missing"
        return ""
    raise ValueError(f"unknown step {step!r}")


def stored_generation(params) -> int | None:
    """The generation in the params Snakemake stored for an output (None: never redone)."""
    for p in params or ():
        m = _REDO.match(str(p))
        if m:
            return int(m.group(1))
    return None


def redo_param(stored_params, why: str):
    """The `redo` param of one job of a cell: `stored_params` are the params Snakemake stored for
    the job's output (None when unknown), `why` what :func:`broken` says of the cell."""
    prev = stored_generation(stored_params)
    if why:
        return f"volbench-redo-{(prev or 0) + 1}"
    return UNSET if prev is None else f"volbench-redo-{prev}"
