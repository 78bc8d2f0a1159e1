"""The ``volbench sparse-*`` subcommands (the rules of workflow/rules/sparse.smk call them)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import io
from ..errors import VolbenchError


def _json(s: str):
    return json.loads(s) if s else {}


def cmd_split(a):
    from .split import write_split

    rec = write_split(a.volume, a.meta, a.dataset, a.fraction, a.seed, a.out_dir, labels_path=a.labels or None)
    print(json.dumps({k: rec[k] for k in ("dataset", "fraction", "n_train", "n_test")}))


def cmd_fit(a):
    from .. import pipeline
    from . import run

    out = Path(a.out_dir)
    record = out / run.FIT_JSON
    if not a.in_process:
        out.mkdir(parents=True, exist_ok=True)
        for stale in (record, out / run.PREDICTION):
            stale.unlink(missing_ok=True)
        rec = pipeline.isolated(a.argv, record, "sparse fit")
        if rec.get("status") != "ok":
            (out / run.PREDICTION).unlink(missing_ok=True)
            io.write_json(record, {**rec, "method": a.name or a.method_type, "method_type": a.method_type,
                                   "params": _json(a.params), **run.describe(a.method_type, a.module or None)})
            if a.on_failure == "raise":
                raise VolbenchError(rec["error"])
        return
    rec = run.fit_cell(a.train_dir, a.method_type, _json(a.params), out, name=a.name or None, seed=a.seed,
                       device=a.device, threads=a.threads, module=a.module or None)
    io.write_json(record, rec)


def cmd_score(a):
    from .score import score_split

    splits = _json(a.splits)
    if not isinstance(splits, list) or not splits:
        raise VolbenchError("--splits: give a JSON list of {train_dir, methods: {name: folder}, out}")
    for job in splits:  # one process for every split of the dataset: torch and LPIPS load once
        io.write_json(job["out"], score_split(a.volume, job["train_dir"], job["methods"], lpips_cfg=_json(a.lpips),
                                             labels_path=a.labels or None))


def cmd_table(a):
    from .table import write_table

    write_table(a.scores, a.out_base)


def cmd_table_axes(a):
    from .table_axes import write_table

    write_table(a.scores, a.out_base)


def cmd_training_figure(a):
    from .figure import draw_training

    draw_training(a.scores, _json(a.methods), a.out_base)


def cmd_figure(a):
    from .figure import draw

    draw(a.volume, a.scores, _json(a.methods), a.out_base, labels_path=a.labels or None)


def register(sub) -> None:
    s = sub.add_parser("sparse-split", help="sparse slices: the training split of a dataset and fraction")
    s.add_argument("--volume", required=True)
    s.add_argument("--meta", required=True)
    s.add_argument("--dataset", required=True)
    s.add_argument("--fraction", type=float, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out-dir", required=True)
    s.add_argument("--labels", default="", help="the dataset's label volume (labels.tif), if it has one")
    s.set_defaults(func=cmd_split)

    s = sub.add_parser("sparse-fit", help="sparse slices: one method on one training split (in a child process)")
    s.add_argument("--train-dir", required=True, help="the split's input folder (train.tif, train.json): all it reads")
    s.add_argument("--method-type", required=True)
    s.add_argument("--name", default="", help="the method instance's name")
    s.add_argument("--module", default="", help="the module of a method type that lives outside volbench")
    s.add_argument("--params", default="{}")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--out-dir", required=True)
    s.add_argument("--on-failure", choices=["record", "raise"], default="record")
    s.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_fit)

    s = sub.add_parser("sparse-score",
                       help="sparse slices: PSNR/SSIM/LPIPS of every method on the held-out slices of each split")
    s.add_argument("--volume", required=True)
    s.add_argument("--splits", required=True,
                   help="JSON list, one item per split: {train_dir, methods: {name: folder}, out}")
    s.add_argument("--lpips", default="{}")
    s.add_argument("--labels", default="", help="the dataset's label volume (labels.tif), if it has one")
    s.set_defaults(func=cmd_score)

    s = sub.add_parser("sparse-table", help="sparse slices: the table (seed 004 Table 1 layout)")
    s.add_argument("--out-base", required=True)
    s.add_argument("scores", nargs="+")
    s.set_defaults(func=cmd_table)

    s = sub.add_parser("sparse-table-axes",
                       help="sparse slices: per-axis PSNR/SSIM/semantic loss and Dice (seed 004 Tables 2-3 layout)")
    s.add_argument("--out-base", required=True)
    s.add_argument("scores", nargs="+")
    s.set_defaults(func=cmd_table_axes)

    s = sub.add_parser("sparse-training-figure",
                       help="sparse slices: the trained methods' curves against their held-out PSNR")
    s.add_argument("--methods", required=True, help="JSON {fraction label: {method: folder}}")
    s.add_argument("--out-base", required=True)
    s.add_argument("scores", nargs="+")
    s.set_defaults(func=cmd_training_figure)

    s = sub.add_parser("sparse-figure", help="sparse slices: held-out slices beside each method")
    s.add_argument("--volume", required=True)
    s.add_argument("--methods", required=True, help="JSON {fraction label: {method: folder}}")
    s.add_argument("--out-base", required=True)
    s.add_argument("--labels", default="", help="the dataset's label volume: segmentation outlines")
    s.add_argument("scores", nargs="+")
    s.set_defaults(func=cmd_figure)
