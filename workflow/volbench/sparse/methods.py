"""Reconstruction methods of the sparse-slice task: the interface and the registry.

A method is a :class:`SparseMethod` subclass. Its :meth:`~SparseMethod.reconstruct` receives a
:class:`~volbench.sparse.split.TrainSet` (the training slices, their z indices, the z indices to
reconstruct, shape, spacing) and a :class:`FitContext` (seed, device, threads, a folder for its
training history), and returns the held-out slices it predicts, ``(n_test, H, W)`` float on the
volume's intensity scale. It never sees a test slice: the job that runs it is given the training
file alone (volbench.sparse.run).

Methods are looked up by type name in :data:`REGISTRY` (``"module:Class"``, imported on first
use); a config names them under ``sparse_slices.methods`` (docs/sparse-slices.md). Adding one (the
next issue's tri-plane Gaussians) is one class plus one registry line. Like a codec, a method says
how the tables and figures show it (``display_name``, ``family``, ``table_order``, ``trains``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import VolbenchError

#: method type -> "module:Class" (modules relative to volbench.sparse)
REGISTRY: dict[str, str] = {
    "nearest": "interp:NearestSlice",
    "linear": "interp:LinearZ",
    "cubic": "interp:CubicZ",
    "siren": "siren_fit:SirenSparse",
    "gs3d_slice": "gaussian_fit:GS3DSliceSparse",
    "gaussianpile": "gaussian_fit:GaussianPileSparse",
    "innergs": "composite_fit:InnerGSSparse",
    "triplane": "composite_fit:TriPlaneSparse",
}


@dataclass
class FitContext:
    seed: int = 0
    device: str = "auto"
    threads: int = 1
    workdir: Path | None = None  # where a training method writes history.csv


class SparseMethod:
    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    #: "interpolation", "neural", "gaussian" (colours in the figure)
    family: ClassVar[str] = "other"
    table_order: ClassVar[int] = 1000
    trains: ClassVar[bool] = False
    uses_gpu: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise VolbenchError(f"sparse method {self.name}: unknown parameter(s) {unknown}; "
                                f"known: {sorted(self.defaults)}")
        self.params = {**self.defaults, **params}
        self.check_params()

    def check_params(self) -> None:
        """Raise VolbenchError for invalid parameter values."""

    @classmethod
    def versions(cls) -> dict[str, str]:
        import scipy

        return {"numpy": np.__version__, "scipy": scipy.__version__}

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {"display_name": cls.display_name or cls.name, "family": cls.family,
                "table_order": int(cls.table_order), "trains": bool(cls.trains)}

    def reconstruct(self, train, ctx: FitContext) -> np.ndarray:
        raise NotImplementedError


def available() -> list[str]:
    return sorted(REGISTRY)


def get_method(kind: str, module: str | None = None) -> type[SparseMethod]:
    """The class of a method type: from REGISTRY, or the SparseMethod subclass named `kind` in
    `module` (a method living outside volbench, as a codec's ``module:``); an unknown type is a
    VolbenchError listing the known ones."""
    if module:
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise VolbenchError(f"sparse method {kind}: cannot import module {module!r} ({exc})") from None
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, SparseMethod) and obj.name == kind:
                return obj
        raise VolbenchError(f"sparse method {kind}: module {module!r} has no SparseMethod named {kind!r}")
    if kind not in REGISTRY:
        raise VolbenchError(f"unknown sparse method {kind!r}; known: {', '.join(available())}")
    mod, cls = REGISTRY[kind].split(":")
    return getattr(importlib.import_module(f"{__package__}.{mod}"), cls)


def to_dtype(values: np.ndarray, dtype) -> np.ndarray:
    """Predicted slices in the volume's dtype (integers rounded and clipped to the dtype's range),
    as a decoder would store them."""
    dtype = np.dtype(dtype)
    v = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise VolbenchError("the method predicted NaN or infinite values")
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        v = np.clip(np.rint(v), info.min, info.max)
    return v.astype(dtype)
