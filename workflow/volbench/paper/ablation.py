"""Ablation tables: codec instances named ``ablation_*`` against the main instance of their codec.

An ablation instance (config/ablation.yaml) is compared with the first main instance (config
order) of the same codec type on the same dataset at the same rate point label, and labelled by
the parameters in which the two differ, written the way the papers write them (sigma_z as a
multiple of the dataset's scan spacing dz, counts as M or N, "– Sparse gating" ...). The
parameters are the summary's ``params``: the codec's full parameters as encode.json recorded them
(defaults and preset merged in).
"""

from __future__ import annotations

from typing import Any, Callable

import pandas as pd

from .formatting import Col, Row, Table, num
from .selection import ABLATION_PREFIX, Context, ablation_mask, failed_note, metric, ok_rows

_COUNT_KEYS = ("n_init", "init_count", "initial_count", "n_gaussians_init", "num_gaussians", "n_gaussians", "m",
               "n0", "init_gaussians", "initial_gaussians")
_INIT_KEYS = ("init", "initialisation", "initialization", "init_mode")

#: (row label of the reference, from the ablated key(s), the reference's parameters and dz)
RefLabel = Callable[[str, dict[str, Any], float], str]


def _fmt_param(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _rel(f: float) -> str:
    """A multiple of dz the way the GaussianPile paper writes it: dz/10, dz/2, dz, 2dz, 10dz."""
    if abs(f - 1) < 1e-9:
        return "δz"
    if f < 1:
        return f"δz/{1 / f:.3g}"
    return f"{f:.3g}δz"


def pretty_param(key: str, value: Any, codec_type: str = "", dz: float | None = None) -> str:
    """A paper-style label for one ablated parameter (N for VolMicro's count, M for GaussianPile's).

    An absolute sigma_z is written relative to the dataset's scan spacing dz when dz is known.
    """
    k = key.lower()
    f = num(value)
    if "sigma_z" in k and f is not None and any(s in k for s in ("factor", "scale", "ratio", "mult")):
        return f"σz = {_rel(f)}"
    if "sigma_z" in k and f is not None:
        return f"σz = {_rel(f / dz)}" if dz else f"σz = {f:g}"
    if k in _COUNT_KEYS and f is not None:
        sym = "N" if codec_type == "volmicro" else "M"
        return f"{sym} = {f / 1000:g}k" if f >= 1000 else f"{sym} = {f:g}"
    if k in _INIT_KEYS and isinstance(value, str):
        return f"Init. = {value.capitalize()}"
    off = value in (False, None) or str(value).lower() in ("none", "off", "false", "uniform", "0")
    if "gate" in k and off:
        return "– Sparse gating"
    if ("edge" in k or k in ("loss", "loss_weighting", "weighting")) and off:
        return "– Edge weighting"
    if "densif" in k and off:
        return "– Adaptive densification"
    if "quant" in k and off:
        return "w/o Quant."
    if "cutoff" in k and f is not None:
        return f"cutoff = {f:g}"
    return f"{key} = {_fmt_param(value)}"


def pretty_key(key: str) -> str:
    k = key.lower()
    if "sigma_z" in k:
        return "σz"
    if k in _COUNT_KEYS:
        return "M / N"
    if k in _INIT_KEYS:
        return "Init."
    return key


def param_label(key: str, params: dict[str, Any], codec_type: str, dz: float | None, plain: str) -> str:
    """The label of a reference row: its values of the ablated key(s), or `plain` without a key."""
    if not key:
        return plain
    parts = []
    for k in key.split("+"):
        v = params.get(k)
        if v is None and k.lower() in _INIT_KEYS:
            v = "random"  # a codec without the parameter: gaussianpile's random initialisation
        parts.append(pretty_param(k, v, codec_type, dz) if v is not None else f"{pretty_key(k)} = default")
    return ", ".join(parts)


def ablation_entries(df: pd.DataFrame, codec_type: str, keep: Callable[[set[str]], bool]) -> list[dict[str, Any]]:
    """Ablation rows of one codec type, each with its reference row and the differing params.

    The rate knob (whose realised value differs from run to run) is not a difference.
    """
    out = []
    abl = df[ablation_mask(df) & (df["codec_type"] == codec_type)]
    mains = df[~ablation_mask(df) & (df["codec_type"] == codec_type)]
    for _, r in abl.iterrows():
        refs = mains[(mains["dataset"] == r["dataset"]) & (mains["point"] == r["point"])]
        ref = None if refs.empty else refs.iloc[0]
        skip = {str(r.get("knob"))} | {"label", "target_bpp", "progress"}
        if ref is not None:
            p, q = r["_params"], ref["_params"]
            diff = {k: p.get(k) for k in set(p) | set(q) if k not in skip and p.get(k) != q.get(k)}
        else:
            diff = {}
        if not keep(set(diff)):
            continue
        out.append({"row": r, "ref": ref, "diff": diff})
    return out


def entry_label(e: dict[str, Any]) -> str:
    """The row label of an ablation entry: its differing parameters (else its instance name)."""
    if not e["diff"]:
        return e["row"]["codec"][len(ABLATION_PREFIX):] or e["row"]["codec"]
    ctype = str(e["row"]["codec_type"])
    dz = e.get("dz")
    return ", ".join(pretty_param(k, v, ctype, dz) for k, v in sorted(e["diff"].items()))


def _sort_value(key: str, params: dict[str, Any]) -> tuple:
    vals = []
    for k in key.split("+"):
        v = params.get(k)
        f = num(v)
        vals.append((0, f, "") if f is not None else (1, 0.0, str(v)))
    return tuple(vals)


def ablation_table(name: str, title: str, df_all: pd.DataFrame, ctx: Context, codec_type: str,
                   keep: Callable[[set[str]], bool], metrics: list[tuple[str, str, str | None, str]],
                   ref_label: RefLabel, empty_note: str, speedup: bool = False,
                   per_key_blocks: bool = True) -> Table:
    """Blocks of (dataset, rate point, ablated key): the reference row, then the ablation rows."""
    df = ok_rows(df_all)
    entries = ablation_entries(df, codec_type, keep)
    cols = [Col(m, label, "", better, kind) for m, label, better, kind in metrics]
    if speedup:
        cols.append(Col("speedup", "Speedup", "", "max", "speedup"))
    ds_order = ctx.dataset_order(df)
    multi_pt = len({e["row"]["point"] for e in entries}) > 1
    # group: (dataset, point, key group)
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for e in entries:
        key = "+".join(sorted(e["diff"])) if per_key_blocks else ""
        groups.setdefault((e["row"]["dataset"], e["row"]["point"], key), []).append(e)
    rows: list[Row] = []
    for (ds, point, key), es in sorted(groups.items(), key=lambda kv: (ds_order.index(kv[0][0])
                                                                      if kv[0][0] in ds_order else 99,
                                                                      kv[0][1], kv[0][2])):
        pk = "+".join(pretty_key(k) for k in key.split("+")) if key else ""
        block = " / ".join(x for x in [ds] + ([point] if multi_pt else []) + ([pk] if pk else []) if x)
        ref = es[0]["ref"]
        ref_time = None if ref is None else num(ref["encode_seconds"])
        dz = ctx.dz(ds)
        for e in es:
            e["dz"] = dz

        def vals(r):
            v = {m: metric(r, m) for m, *_ in metrics}
            if speedup:
                t = num(r["encode_seconds"])
                v["speedup"] = (ref_time / t) if (ref_time and t) else None
            return v

        def effective(r) -> dict[str, Any]:
            p = {k: v for k, v in r["_params"].items() if k not in ("label", "target_bpp", str(r.get("knob")))}
            for k in key.split("+") if key else []:
                if "sigma_z" in k and p.get(k) is None:
                    p[k] = ctx.sigma_z(ds)  # the codec's fallback: the dataset's sigma_z, else dz
                if k.lower() in _INIT_KEYS and p.get(k) is None:
                    p[k] = "random"  # a codec without the parameter: gaussianpile's random initialisation
            return p

        members = []
        if ref is not None:
            members.append((ref_label(key, effective(ref), dz), ref, True))
        members += [(entry_label(e), e["row"], False) for e in es]
        if key and members:
            members.sort(key=lambda m: _sort_value(key, effective(m[1])))
        for label, r, is_ref in members:
            rows.append(Row(label + (" (ours)" if is_ref and key else ""), vals(r), block,
                            meta={"dataset": ds, "codec": r["codec"], "point": r["point"]}))
    notes = [] if rows else [empty_note]
    return Table(name, title, cols, rows, notes + failed_note(df_all, df_all["dataset"].unique()),
                 block_header="Dataset / point / ablated", method_header="Configuration")
