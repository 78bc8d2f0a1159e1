"""The table model of the paper outputs and its formats: a :class:`Table` is a list of rows (one
per method, optionally grouped in blocks) and a list of columns (a metric, optionally under a
column group such as a dataset). It is written as CSV (raw numbers, full precision), Markdown,
LaTeX (booktabs) and HTML (for the Snakemake report). The best value of each column (within a
block) is bold, as in the papers; a column may also underline the second best.
"""

from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..io import atomic_write_text

#: what a cell without a value shows (Markdown/HTML; LaTeX: ---)
MISSING = "—"


@dataclass
class Col:
    key: str
    label: str
    group: str = ""
    better: str | None = None  # "max", "min" or None
    kind: str = "num"
    second: bool = False


@dataclass
class Row:
    label: str
    values: dict[str, Any]
    block: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Table:
    name: str
    title: str
    columns: list[Col]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    block_header: str = ""
    method_header: str = "Method"

    @property
    def empty(self) -> bool:
        return not self.rows


DECIMALS = {"psnr": 2, "ssim": 3, "lpips": 3, "mb": 2, "ratio": 1, "minutes": 1, "ms": 0, "mvox": 1,
            "speedup": 2, "seconds": 0, "count": 0, "pct": 2, "db": 3, "bpv": 3, "num": 3}


def num(v: Any) -> float | None:
    if v is None or isinstance(v, (str, bool)):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _mb_decimals(f: float) -> int:
    return 1 if abs(f) >= 100 else 2 if abs(f) >= 1 else max(2, 2 - int(math.floor(math.log10(abs(f)))) if f else 2)


def _rank_key(col: Col, v: Any) -> float | None:
    """The value used to rank a cell: rounded as displayed, so equal-looking values tie."""
    f = num(v)
    if f is None:
        return None
    if math.isinf(f):
        return f
    if col.kind == "bpv":
        return float(f"{f:.3g}")
    if col.kind == "mb":
        return round(f, _mb_decimals(f))
    if col.kind == "seconds":  # as fmt_duration shows it
        return round(f, 3) if f < 0.1 else round(f, 1) if f < 10 else round(f)
    return round(f, DECIMALS.get(col.kind, 3))


def best_marks(table: Table) -> dict[tuple[int, str], str]:
    """{(row index, column key): "best" | "second"} per column, within each block."""
    marks: dict[tuple[int, str], str] = {}
    blocks: dict[str, list[int]] = {}
    for i, r in enumerate(table.rows):
        blocks.setdefault(r.block, []).append(i)
    for col in table.columns:
        if col.better not in ("max", "min"):
            continue
        for idx in blocks.values():
            vals = [(i, _rank_key(col, table.rows[i].values.get(col.key))) for i in idx]
            vals = [(i, v) for i, v in vals if v is not None]
            if len(vals) < 2:
                continue  # a lone value is not "best" of anything
            distinct = sorted({v for _, v in vals}, reverse=(col.better == "max"))
            if len(distinct) < 2:
                continue  # all equal: nothing stands out
            for i, v in vals:
                if v == distinct[0]:
                    marks[(i, col.key)] = "best"
                elif col.second and len(distinct) > 1 and v == distinct[1]:
                    marks[(i, col.key)] = "second"
    return marks


def fmt_duration(seconds: float) -> str:
    """Like the papers: 1h24m, 8m9s, 42s, 0.8s (and 4ms below 0.1 s)."""
    s = float(seconds)
    if s < 0.1:
        return f"{s * 1000:.0f}ms"
    if s < 10:
        return f"{s:.1f}s"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        m, sec = divmod(s, 60)
        return f"{m}m{sec}s" if sec else f"{m}m"
    h, rem = divmod(s, 3600)
    return f"{h}h{rem // 60}m"


def fmt_value(col: Col, v: Any, style: str = "md") -> str:
    """Format one cell; style "md"/"html" (unicode) or "tex"."""
    if isinstance(v, str):
        return v
    f = num(v)
    if f is None:
        return MISSING if style != "tex" else "---"
    if math.isinf(f):
        inf = "$\\infty$" if style == "tex" else "∞"
        return inf if f > 0 else "-" + inf
    times = "$\\times$" if style == "tex" else "×"
    k = col.kind
    if k == "seconds":
        return fmt_duration(f)
    if k == "ratio":
        return (f"{f:.1f}" if f < 10 else f"{f:.0f}") + times
    if k == "speedup":
        return f"{f:.2f}" + times
    if k == "count":
        if f >= 1e6:
            return f"{f / 1e6:.2f}M"
        if f >= 1e4:
            return f"{f / 1e3:.0f}k"
        if f >= 1e3:
            return f"{f / 1e3:.1f}k"
        return f"{f:.0f}"
    if k == "ms":
        return f"{f:,.0f}"
    if k == "bpv":
        return f"{f:.3g}" if f < 100 else f"{f:.0f}"
    if k == "mb":
        return f"{f:.{_mb_decimals(f)}f}"
    if k == "pct":
        return f"{f:+.2f}" + (" \\%" if style == "tex" else " %")
    if k == "db":
        return f"{f:+.3f}"
    return f"{f:.{DECIMALS.get(k, 3)}f}"


#: how each format marks the best and the second best value of a column
_MARKUP = {"md": ("**{}**", "<u>{}</u>"), "tex": ("\\textbf{{{}}}", "\\underline{{{}}}"),
           "html": ("<b>{}</b>", "<u>{}</u>")}


def _marked(s: str, mark: str | None, style: str) -> str:
    if mark is None:
        return s
    best, second = _MARKUP[style]
    return (best if mark == "best" else second).format(s)


def _arrow(col: Col, style: str) -> str:
    if col.better == "max":
        return " $\\uparrow$" if style == "tex" else " ↑"
    if col.better == "min":
        return " $\\downarrow$" if style == "tex" else " ↓"
    return ""


def tex_escape(s: str) -> str:
    s = s.replace("σz", "\x00SZ\x00").replace("δz", "\x00DZ\x00")
    rep = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
           "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "σ": r"$\sigma$",
           "δ": r"$\delta$", "×": r"$\times$", "–": "--", "—": "---", "∞": r"$\infty$", "Δ": r"$\Delta$",
           "↑": r"$\uparrow$", "↓": r"$\downarrow$", "≥": r"$\geq$", "<": r"$<$", ">": r"$>$"}
    out = "".join(rep.get(ch, ch) for ch in s)
    return out.replace("\x00SZ\x00", "$\\sigma_z$").replace("\x00DZ\x00", "$\\delta_z$")


def _groups(columns: list[Col]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for c in columns:
        if out and out[-1][0] == c.group:
            out[-1] = (c.group, out[-1][1] + 1)
        else:
            out.append((c.group, 1))
    return out


def to_markdown(t: Table) -> str:
    marks = best_marks(t)
    has_block = any(r.block for r in t.rows)
    grouped = any(c.group for c in t.columns)
    head = ([t.block_header or "Block"] if has_block else []) + [t.method_header]
    head += [((c.group + " ") if grouped and c.group else "") + c.label + _arrow(c, "md") for c in t.columns]
    lines = [f"**{t.title}**", ""]
    if t.rows:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] * (len(head) - len(t.columns)) + ["---:"] * len(t.columns)) + "|")
        for i, r in enumerate(t.rows):
            cells = ([r.block] if has_block else []) + [r.label]
            for c in t.columns:
                cells.append(_marked(fmt_value(c, r.values.get(c.key), "md"), marks.get((i, c.key)), "md"))
            lines.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
        lines.append("")
    for n in t.notes:
        lines.append(f"*{n}*")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def to_latex(t: Table) -> str:
    marks = best_marks(t)
    has_block = any(r.block for r in t.rows)
    lead = (1 if has_block else 0) + 1
    grouped = any(c.group for c in t.columns)
    out = ["% generated by volbench (volbench.paper.tables); needs \\usepackage{booktabs}",
           "\\begin{table}[t]", "\\centering", f"\\caption{{{tex_escape(t.title)}}}",
           f"\\label{{tab:{t.name}}}"]
    if t.rows:
        out.append("\\begin{tabular}{" + "l" * lead + "r" * len(t.columns) + "}")
        out.append("\\toprule")
        if grouped:
            cells, rules, pos = [""] * lead, [], lead + 1
            for g, n in _groups(t.columns):
                cells.append(f"\\multicolumn{{{n}}}{{c}}{{{tex_escape(g)}}}" if n > 1 else tex_escape(g))
                if g:
                    rules.append(f"\\cmidrule(lr){{{pos}-{pos + n - 1}}}")
                pos += n
            out.append(" & ".join(cells) + " \\\\")
            if rules:
                out.append(" ".join(rules))
        head = ([tex_escape(t.block_header or "Block")] if has_block else []) + [tex_escape(t.method_header)]
        head += [tex_escape(c.label) + _arrow(c, "tex") for c in t.columns]
        out.append(" & ".join(head) + " \\\\")
        out.append("\\midrule")
        prev = None
        for i, r in enumerate(t.rows):
            if has_block and prev is not None and r.block != prev:
                out.append("\\midrule")
            cells = ([tex_escape(r.block) if r.block != prev else ""] if has_block else []) + [tex_escape(r.label)]
            prev = r.block
            for c in t.columns:
                v = r.values.get(c.key)
                s = tex_escape(v) if isinstance(v, str) else fmt_value(c, v, "tex")
                cells.append(_marked(s, marks.get((i, c.key)), "tex"))
            out.append(" & ".join(cells) + " \\\\")
        out.append("\\bottomrule")
        out.append("\\end{tabular}")
    for n in t.notes:
        out.append(f"\\par\\smallskip{{\\footnotesize {tex_escape(n)}}}")
    out.append("\\end{table}")
    return "\n".join(out) + "\n"


def to_html(t: Table) -> str:
    marks = best_marks(t)
    has_block = any(r.block for r in t.rows)
    grouped = any(c.group for c in t.columns)
    e = html.escape
    out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
           "<style>table{border-collapse:collapse;font-family:sans-serif;font-size:13px}"
           "th,td{border:1px solid #bbb;padding:3px 7px}td.n{text-align:right}"
           "caption{font-weight:bold;padding:4px}</style></head><body>"]
    if t.rows:
        out.append(f"<table><caption>{e(t.title)}</caption><thead>")
        lead = (1 if has_block else 0) + 1
        if grouped:
            out.append("<tr>" + f"<th colspan='{lead}'></th>"
                       + "".join(f"<th colspan='{n}'>{e(g)}</th>" for g, n in _groups(t.columns)) + "</tr>")
        head = ([t.block_header or "Block"] if has_block else []) + [t.method_header]
        head += [c.label + _arrow(c, "md") for c in t.columns]
        out.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>")
        for i, r in enumerate(t.rows):
            cells = ([f"<td>{e(r.block)}</td>"] if has_block else []) + [f"<td>{e(r.label)}</td>"]
            for c in t.columns:
                s = _marked(e(fmt_value(c, r.values.get(c.key), "html")), marks.get((i, c.key)), "html")
                cells.append(f"<td class='n'>{s}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
    else:
        out.append(f"<p><b>{e(t.title)}</b></p>")
    for n in t.notes:
        out.append(f"<p><i>{e(n)}</i></p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def to_frame(t: Table) -> pd.DataFrame:
    """Raw values (no rounding) with the cell's best mark, one row per table row."""
    marks = best_marks(t)
    recs = []
    for i, r in enumerate(t.rows):
        rec: dict[str, Any] = {"block": r.block, "method": r.label}
        rec.update({f"meta_{k}": v for k, v in r.meta.items()})
        for c in t.columns:
            key = f"{c.group} {c.label}".strip() if c.group else c.label
            rec[key] = r.values.get(c.key)
            if (i, c.key) in marks:
                rec.setdefault("marks", [])
                rec["marks"].append(f"{key}:{marks[(i, c.key)]}")
        rec["marks"] = ";".join(rec.get("marks", []))
        recs.append(rec)
    if not recs:
        return pd.DataFrame({"note": t.notes or ["empty"]})
    return pd.DataFrame(recs)


def to_csv(t: Table) -> str:
    return to_frame(t).to_csv(index=False)


def write_table(t: Table, out_dir: str | os.PathLike) -> list[Path]:
    """Write <name>.csv/.md/.tex/.html into out_dir, each atomically."""
    out_dir = Path(out_dir)
    paths = []
    for ext, fn in (("csv", to_csv), ("md", to_markdown), ("tex", to_latex), ("html", to_html)):
        p = out_dir / f"{t.name}.{ext}"
        atomic_write_text(p, fn(t))
        paths.append(p)
    return paths
