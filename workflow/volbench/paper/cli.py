"""Command-line subcommands of the paper outputs, registered into the ``volbench`` CLI.

    volbench paper-tables --summary results/tables/summary.csv --config-json cfg.json \\
        --out results/tables/paper [--table gaussianpile_table1 ...]
    volbench bdrate --summary results/tables/summary.csv --anchor hevc --out results/tables/paper
    volbench figures rd --summary ... --dataset D --out results/plots/D
    volbench figures bubble --summary ... --out results/plots/bubble
    volbench figures training --summary ... --results results --dataset D --out results/plots/D/training_dynamics
    volbench figures qualitative --summary ... --results results --dataset D \\
        --out results/plots/D/qualitative --out-errors results/plots/D/error_maps
    volbench paper-environment --env-json results/tables/environment.json --out results/tables/paper/environment
    volbench summary-html --summary results/tables/summary.csv --out results/tables/summary.html
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import VolbenchError


def _config(arg: str | None) -> dict[str, Any]:
    """--config-json: inline JSON (starting with '{') or the path of a JSON/YAML file."""
    if not arg:
        return {}
    text = arg.strip()
    if not text.startswith("{"):
        p = Path(arg)
        if not p.exists():
            raise VolbenchError(f"--config-json {arg}: no such file; give a JSON object or a JSON/YAML file")
        text = p.read_text()
        if p.suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text) or {}
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise VolbenchError(f"--config-json: not valid JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise VolbenchError("--config-json: expected a JSON object (the workflow config)")
    return cfg


def _ctx(args):
    from .selection import Context

    return Context.from_config(_config(getattr(args, "config_json", None)), getattr(args, "matched_bpp", None))


def _base(path: str) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".png", ".pdf") else p


def cmd_tables(args) -> None:
    from .formatting import write_table
    from .selection import load_summary
    from .tables import GENERATORS, build

    df = load_summary(args.summary)
    ctx = _ctx(args)
    names = args.table or list(GENERATORS)
    for name in names:
        t = build(name, df, ctx)
        for p in write_table(t, args.out):
            print(p)


def cmd_bdrate(args) -> None:
    from .bdrate import write_bdrate
    from .selection import load_summary

    df = load_summary(args.summary)
    ctx = _ctx(args)
    anchor = args.anchor or ctx.config.get("anchor") or "hevc"
    for p in write_bdrate(df, args.out, anchor, args.method, args.min_points, args.min_overlap, ctx):
        print(p)


def cmd_figures(args) -> None:
    from . import figures
    from .selection import load_summary

    ctx = _ctx(args)
    kind = args.kind
    need_ds = kind in ("rd", "training", "qualitative")
    if need_ds and not args.dataset:
        raise VolbenchError(f"figures {kind}: give --dataset")
    if kind in ("rd", "bubble", "qualitative") and not args.summary:
        raise VolbenchError(f"figures {kind}: give --summary (results/tables/summary.csv)")
    if kind in ("training", "qualitative") and not args.results:
        raise VolbenchError(f"figures {kind}: give --results (the results folder)")
    if kind == "rd":
        metrics = tuple(args.metrics) if args.metrics else tuple(figures.RD_METRICS)
        paths = figures.rd_curves(load_summary(args.summary), args.dataset, args.out, ctx, metrics)
    elif kind == "bubble":
        paths = figures.bubble_chart(load_summary(args.summary), _base(args.out), ctx)
    elif kind == "training":
        df = load_summary(args.summary) if args.summary else None  # the codecs' names and looks
        paths = figures.training_dynamics(args.results, args.dataset, _base(args.out), df)
    elif kind == "qualitative":
        if not args.out_errors:
            raise VolbenchError("figures qualitative: give --out-errors (base path of the error maps)")
        paths = figures.qualitative(load_summary(args.summary), args.results, args.dataset, _base(args.out),
                                    _base(args.out_errors), args.bpv, ctx, args.slice)
    else:  # argparse restricts the choices
        raise VolbenchError(f"unknown figure kind {kind}")
    for p in paths:
        print(p)


def cmd_environment(args) -> None:
    from ..io import atomic_write_text
    from .environment import render

    src = Path(args.env_json)
    if not src.exists():
        raise VolbenchError(f"{src} does not exist; run the environment rule first")
    md, html = render(json.loads(src.read_text()))
    base = _base(args.out)
    atomic_write_text(base.with_name(base.name + ".md"), md)
    atomic_write_text(base.with_name(base.name + ".html"), html)
    print(base.with_name(base.name + ".md"))
    print(base.with_name(base.name + ".html"))


def cmd_summary_html(args) -> None:
    from ..io import atomic_write_text
    from .formatting import to_html
    from .selection import load_summary
    from .summary_table import summary_table

    t = summary_table(load_summary(args.summary), _ctx(args))
    atomic_write_text(args.out, to_html(t))
    print(args.out)


def register(subparsers) -> None:
    """Add paper-tables, bdrate, figures and paper-environment to a subparsers object."""
    from .bdrate import DEFAULT_METHOD, DEFAULT_MIN_OVERLAP, DEFAULT_MIN_POINTS
    from .tables import GENERATORS

    def common(s, results=False):
        s.add_argument("--config-json", default=None,
                       help="the workflow config: inline JSON or a JSON/YAML file (dataset modality, codec order, "
                            "matched_bpp, anchor)")
        s.add_argument("--matched-bpp", type=float, nargs="*", default=None,
                       help="matched bit rates (default: config matched_bpp, else 0.073)")
        if results:
            s.add_argument("--results", default=None, help="the results folder (default: none)")

    s = subparsers.add_parser("paper-tables", help="the papers' tables (CSV, Markdown, LaTeX, HTML)")
    s.add_argument("--summary", required=True)
    s.add_argument("--out", required=True, help="output folder (results/tables/paper)")
    s.add_argument("--table", action="append", choices=sorted(GENERATORS), help="one table (repeatable); default all")
    common(s)
    s.set_defaults(func=cmd_tables)

    s = subparsers.add_parser("bdrate", help="BD-rate / BD-PSNR of every codec against the anchor, per dataset")
    s.add_argument("--summary", required=True)
    s.add_argument("--out", required=True, help="output folder: bdrate.csv/.md/.tex/.html")
    s.add_argument("--anchor", default=None, help="anchor codec instance (default: config anchor, else hevc)")
    s.add_argument("--method", default=DEFAULT_METHOD, choices=["pchip", "akima", "cubic"])
    s.add_argument("--min-points", type=int, default=DEFAULT_MIN_POINTS)
    s.add_argument("--min-overlap", type=float, default=DEFAULT_MIN_OVERLAP)
    common(s)
    s.set_defaults(func=cmd_bdrate)

    s = subparsers.add_parser("figures", help="paper figures (PNG + PDF)")
    s.add_argument("kind", choices=["rd", "bubble", "training", "qualitative"])
    s.add_argument("--summary", default=None)
    s.add_argument("--dataset", default=None)
    s.add_argument("--out", required=True,
                   help="rd: output folder; others: output path without extension (.png and .pdf written)")
    s.add_argument("--out-errors", default=None, help="qualitative: base path of the error maps")
    s.add_argument("--bpv", type=float, default=None, help="qualitative: matched bpv (default: first matched_bpp)")
    s.add_argument("--slice", type=int, default=None, help="qualitative: slice index (default: most structured)")
    s.add_argument("--metrics", nargs="+", default=None,
                   choices=["psnr_2d", "ssim_2d", "psnr_3d", "ssim_3d", "lpips", "psnr_fg", "ssim_fg"],
                   help="rd: the summary columns to plot (default psnr_2d psnr_3d ssim_3d lpips)")
    common(s, results=True)
    s.set_defaults(func=cmd_figures)

    s = subparsers.add_parser("summary-html", help="the summary as a readable HTML table (for the report)")
    s.add_argument("--summary", required=True)
    s.add_argument("--out", required=True, help="the HTML file (results/tables/summary.html)")
    common(s)
    s.set_defaults(func=cmd_summary_html)

    s = subparsers.add_parser("paper-environment", help="environment.json -> Markdown + HTML table")
    s.add_argument("--env-json", required=True)
    s.add_argument("--out", required=True, help="output path without extension")
    s.set_defaults(func=cmd_environment)

