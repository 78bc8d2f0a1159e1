"""The ``sparse_slices:`` section of the config: its checks, its cells and its targets.

::

    sparse_slices:
      datasets: [cells]                 # names under datasets: (default: none, the task is off)
      fractions: [0.25, 0.5, 0.95]      # share of the axial slices given to the methods
      seed: 0                           # of the split (default: the top-level seed)
      methods:                          # instance name -> {method: type, params: {...}, device, gpu}
        nearest: {}
        cubic: {}
        siren: {params: {iterations: 600}}

A method instance's type is its ``method:``, else its name (as codec instances); ``module:`` names
a module holding a method type of its own (volbench.sparse.methods.get_method). Without the
section, or with an empty ``datasets:``, nothing of the task is planned.
"""

from __future__ import annotations

from typing import Any

from ..config import SAFE
from ..errors import VolbenchError
from . import split
from .methods import get_method

DEFAULT_FRACTIONS = (0.25, 0.5, 0.95)
#: where a split, a method's folder and a split's scores live
SPLIT_DIR = "results/sparse/{dataset}/{fraction}/input"
METHOD_DIR = "results/sparse/{dataset}/{fraction}/methods/{method}"
SCORES = "results/sparse/{dataset}/{fraction}/scores.json"
TABLE = "results/tables/sparse/sparse_table1"
TABLE_EXTS = ("csv", "md", "html")
TABLE_AXES = "results/tables/sparse/sparse_table23_axes"
FIGURE = "results/plots/{dataset}/sparse_heldout"
TRAINING_FIGURE = "results/plots/{dataset}/sparse_training"


def section(config: dict) -> dict[str, Any]:
    return dict(config.get("sparse_slices") or {})


def datasets(config: dict) -> list[str]:
    return [str(d) for d in section(config).get("datasets") or []]


def fractions(config: dict) -> list[float]:
    return [float(f) for f in section(config).get("fractions") or DEFAULT_FRACTIONS]


def fraction_labels(config: dict) -> list[str]:
    return [split.fraction_label(f) for f in fractions(config)]


def methods(config: dict) -> dict[str, dict]:
    return {str(k): dict(v or {}) for k, v in (section(config).get("methods") or {}).items()}


def method_type(config: dict, name: str) -> str:
    return str(methods(config)[name].get("method", name))


def method_module(config: dict, name: str) -> str | None:
    return methods(config)[name].get("module") or None


def method_class(config: dict, name: str):
    return get_method(method_type(config, name), method_module(config, name))


def method_params(config: dict, name: str) -> dict:
    return dict(methods(config)[name].get("params") or {})


def split_seed(config: dict) -> int:
    s = section(config)
    return int(s["seed"] if s.get("seed") is not None else config.get("seed", 0))


def enabled(config: dict) -> bool:
    return bool(datasets(config))


def check(config: dict) -> None:
    """Checks beyond the schema, before any job runs: datasets exist, fractions are distinct and in
    (0, 1), method names are safe, types known, parameters valid."""
    if not enabled(config):
        return
    known = set(config.get("datasets") or {})
    for d in datasets(config):
        if d not in known:
            raise VolbenchError(f"sparse_slices.datasets: {d!r} is not a dataset of this config "
                                f"(datasets: {', '.join(sorted(known))})")
    labels = fraction_labels(config)
    for f in fractions(config):
        if not 0.0 < f < 1.0:
            raise VolbenchError(f"sparse_slices.fractions: {f} is not in (0, 1)")
    if len(set(labels)) != len(labels):
        raise VolbenchError(f"sparse_slices.fractions: duplicate fractions {labels}")
    if not methods(config):
        raise VolbenchError("sparse_slices.methods: name at least one method (e.g. nearest: {})")
    for name in methods(config):
        if not SAFE.match(name):
            raise VolbenchError(f"sparse_slices.methods.{name}: method names may hold letters, digits, _ and - only")
        try:
            method_class(config, name)(**method_params(config, name))
        except VolbenchError as exc:
            raise VolbenchError(f"sparse_slices.methods.{name}: {exc}") from None


def method_gpu(config: dict, name: str, device: str) -> int:
    """1 when the method's fit job uses a GPU (as volbench.config.codec_gpu for codecs)."""
    entry = methods(config)[name]
    if "gpu" in entry:
        return int(bool(entry["gpu"]))
    if device == "cpu" or not method_class(config, name).uses_gpu:
        return 0
    if device.startswith("cuda"):
        return 1
    try:
        import torch

        return int(torch.cuda.is_available())
    except ImportError:
        return 0


def method_device(config: dict, name: str) -> str:
    return str(methods(config)[name].get("device", config.get("device", "auto")))


def cells(config: dict) -> list[tuple[str, str, str]]:
    """(dataset, fraction label, method instance) of every fit job."""
    return [(d, f, m) for d in datasets(config) for f in fraction_labels(config) for m in methods(config)]


def targets(config: dict) -> list[str]:
    """The final outputs of the task: the table and one figure per dataset."""
    if not enabled(config):
        return []
    t = [f"{TABLE}.{ext}" for ext in TABLE_EXTS] + [f"{TABLE_AXES}.{ext}" for ext in TABLE_EXTS]
    for d in datasets(config):
        t += [f"{fig.format(dataset=d)}.{ext}" for fig in (FIGURE, TRAINING_FIGURE) for ext in ("png", "pdf")]
    return t


def fit_broken(method_dir) -> str:
    """Why a method's fit must be redone by a plain rerun ('' when it need not): its fit failed, or
    its record lost its prediction (volbench.cellstate does the same for the codec cells)."""
    import json
    from pathlib import Path

    d = Path(method_dir)
    try:
        rec = json.loads((d / "fit.json").read_text())
    except (OSError, ValueError):
        return ""  # no record: the folder is missing (Snakemake makes it) or being written
    if rec.get("status") != "ok":
        return "its fit failed"
    if not (d / "prediction.tif").exists():
        return f"{d / 'prediction.tif'} is missing"
    return ""


def scores_broken(config: dict, dataset: str) -> str:
    """Why a dataset's score job must be redone ('' when it need not): its scores exist but a
    method folder of one of its splits was deleted (Snakemake does not remake a deleted input of
    an output that exists) or failed (its rerun remakes it, and then the scores)."""
    from pathlib import Path

    if not all(Path(SCORES.format(dataset=dataset, fraction=f)).exists() for f in fraction_labels(config)):
        return ""
    for f in fraction_labels(config):
        for m in methods(config):
            d = METHOD_DIR.format(dataset=dataset, fraction=f, method=m)
            if not Path(d).exists():
                return f"{d} is missing"
            if fit_broken(d):
                return f"{d}: {fit_broken(d)}"
    return ""


# -- what the rules of workflow/rules/sparse.smk ask (paths, arguments, resources) -------------
def method_dir(dataset: str, fraction: str, method: str) -> str:
    return METHOD_DIR.format(dataset=dataset, fraction=fraction, method=method)


def method_dirs(config: dict, dataset: str, fraction: str | None = None) -> list[str]:
    """Every method folder of a split (or of every split of the dataset)."""
    fracs = [fraction] if fraction is not None else fraction_labels(config)
    return [method_dir(dataset, f, m) for f in fracs for m in methods(config)]


def split_file(dataset: str, fraction: str, name: str = "train.json") -> str:
    return f"{SPLIT_DIR.format(dataset=dataset, fraction=fraction)}/{name}"


def scores(config: dict, dataset: str | None = None) -> list[str]:
    ds = [dataset] if dataset else datasets(config)
    return [SCORES.format(dataset=d, fraction=f) for d in ds for f in fraction_labels(config)]


def score_splits_arg(config: dict, dataset: str) -> str:
    """--splits of a dataset's score job: each split's input folder, method folders, scores.json."""
    import json

    return json.dumps([{"train_dir": SPLIT_DIR.format(dataset=dataset, fraction=f),
                        "methods": {m: method_dir(dataset, f, m) for m in methods(config)},
                        "out": SCORES.format(dataset=dataset, fraction=f)} for f in fraction_labels(config)])


def figure_methods_arg(config: dict, dataset: str) -> str:
    import json

    return json.dumps({f: {m: method_dir(dataset, f, m) for m in methods(config)} for f in fraction_labels(config)})


def module_arg(config: dict, name: str) -> str:
    import shlex

    m = method_module(config, name)
    return f"--module {shlex.quote(m)}" if m else ""


def gpu_resources(config: dict, name: str, gpu_request: str) -> tuple[int, str]:
    """(gpu, gres) resources of a fit job, as the codec cells ask them (common.smk)."""
    n = method_gpu(config, name, method_device(config, name))
    if gpu_request == "gres":
        return 0, (f"gpu:{n}" if n else "")
    return n, ""


def redo(stored_params, output: str, why: str):
    """The `redo` param of a sparse job: changes when `why` says its output is broken, so that a
    plain rerun redoes it (the codec cells' mechanism, volbench.cellstate, with common.smk's
    reader of the params Snakemake stored, `stored_params`); '' where that mechanism is absent."""
    try:
        from ..cellstate import redo_param
    except ImportError:
        return ""
    return redo_param(stored_params(output), why) if stored_params else ""


def labels_input(config: dict, dataset: str) -> list[str]:
    """The dataset's label volume as an input of its split and score jobs ([] without labels)."""
    from ..datasets.labels import has_labels, labels_path

    return [labels_path(dataset)] if has_labels(config, dataset) else []


def labels_arg(config: dict, dataset: str) -> str:
    """``--labels FILE`` for the split and score jobs of a dataset with labels, else ""."""
    files = labels_input(config, dataset)
    return f"--labels {files[0]}" if files else ""

