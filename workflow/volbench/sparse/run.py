"""One method on one split: the fit job, and its record.

The job's input is the split's training folder (``train.tif`` + ``train.json``, written by
volbench.sparse.split) and nothing else: the volume and its test slices are not among the rule's
inputs and not on the command line, so a method cannot read them. The method runs in a child
process (volbench.pipeline.isolated, as the codecs' encode and decode do): a method that raises,
crashes or is killed for memory becomes a failed record (``status: failed`` and the reason) and
the other cells go on.

Written into the method's folder: ``prediction.tif`` (the predicted held-out slices, in the
order of the split's ``test_z``, in the volume's dtype), ``fit.json`` (status, method type and
instance, parameters after presets, library versions, the split it ran on, wall and CPU seconds,
peak memory, device, seed, and ``fit_psnr``: the method's rendering of its own training slices
against them, dB on the training slices' range, None for methods that reproduce them exactly),
and ``history.csv`` for methods that train.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np

from .. import io
from ..errors import VolbenchError
from ..metrics import psnr_from_mse
from ..torchenv import seed_everything
from . import split
from .methods import FitContext, get_method, to_dtype

FIT_JSON = "fit.json"
PREDICTION = "prediction.tif"
#: methods that render any axis (seed 004 Tables 2-3) and semantic maps: their renderings
RENDERS = "renders.npz"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def split_record(train: split.TrainSet, train_dir) -> dict:
    rec = io.read_json(Path(train_dir) / split.TRAIN_JSON)
    return {k: rec[k] for k in ("dataset", "fraction", "seed", "shape", "train_z", "test_z", "n_train", "n_test",
                                "train_sha256")}


def fit_cell(train_dir, method_type: str, params: dict, out_dir, *, name: str | None = None, seed: int = 0,
             device: str = "auto", threads: int = 1, module: str | None = None) -> dict:
    """Run the method on the training split in this process; writes prediction.tif, returns the record."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = split.read_train(train_dir)
    cls = get_method(method_type, module)
    method = cls(**params)
    ctx = FitContext(seed=int(seed), device=device, threads=int(threads), workdir=out if cls.trains else None)
    seed_everything(seed)
    t0, c0 = time.perf_counter(), time.process_time()
    pred = np.asarray(method.reconstruct(train, ctx))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    want = (len(train.test_z), *train.shape[1:])
    if pred.shape != want:
        raise VolbenchError(f"sparse method {method_type} returned {pred.shape}, expected {want}")
    io.write_volume(out / PREDICTION, to_dtype(pred, train.dtype))
    renders = getattr(method, "renders", None)
    (out / RENDERS).unlink(missing_ok=True)
    if renders:
        write_renders(out / RENDERS, renders, train.dtype)
    fit = getattr(method, "train_fit", None)
    fit_psnr = None
    if fit is not None:
        lo, hi = float(train.slices.min()), float(train.slices.max())
        err = to_dtype(fit, train.dtype).astype(np.float64) - train.slices.astype(np.float64)
        fit_psnr = psnr_from_mse(float(np.mean(err * err)), hi - lo)
    return {"status": "ok", "method": name or method_type, "method_type": method_type,
            "params": method.params, "versions": cls.versions(), **cls.describe(),
            "split": split_record(train, train_dir), "file": PREDICTION,
            "fit_seconds": seconds, "fit_cpu_seconds": cpu, "peak_mb": _peak_mb(), "fit_psnr": fit_psnr,
            "stats": getattr(method, "stats", {}) or {}, "device": device, "threads": int(threads), "seed": int(seed)}


def write_renders(path, renders: dict, dtype) -> None:
    """renders.npz: per axis, ``{axis}_index`` (slice positions along the axis), ``{axis}_image``
    (the rendered slices in the volume's dtype, as prediction.tif) and, for a model with semantic
    features, ``{axis}_semantics`` (float16 class maps, (n, K, h, w), seed 004 eq. 2)."""
    arrays = {}
    for axis, r in renders.items():
        arrays[f"{axis}_index"] = np.asarray(r["index"], dtype=np.int64)
        arrays[f"{axis}_image"] = to_dtype(r["image"], dtype)
        if r.get("semantics") is not None:
            arrays[f"{axis}_semantics"] = np.asarray(r["semantics"], dtype=np.float16)
    tmp = Path(path).with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def read_renders(method_dir) -> dict | None:
    """{axis: {"index", "image", "semantics" (or None)}} from renders.npz, None when absent."""
    path = Path(method_dir) / RENDERS
    if not path.exists():
        return None
    with np.load(path) as z:
        axes = sorted({k.rsplit("_", 1)[0] for k in z.files})
        return {a: {"index": z[f"{a}_index"], "image": z[f"{a}_image"],
                    "semantics": z[f"{a}_semantics"].astype(np.float32) if f"{a}_semantics" in z.files else None}
                for a in axes}


def describe(method_type: str, module: str | None = None) -> dict:
    """The method's presentation (display name, family, ...), also for a failed record; {} when its
    class cannot even be loaded."""
    try:
        return get_method(method_type, module).describe()
    except Exception:
        return {}


def read_fit(method_dir) -> dict:
    """A method folder's fit.json, or a failed record saying it is missing."""
    path = Path(method_dir) / FIT_JSON
    if not path.exists():
        return {"status": "failed", "error": f"{path} missing; run its sparse_fit job"}
    return io.read_json(path)


def read_prediction(method_dir) -> np.ndarray:
    return io.read_volume(Path(method_dir) / PREDICTION)
