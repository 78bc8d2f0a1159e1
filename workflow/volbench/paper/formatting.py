"""The table model of the paper outputs and its formats: a :class:`Table` is a list of rows (one
per method, optionally grouped in blocks) and a list of columns (a metric, optionally under a
column group such as a dataset). It is written as CSV (raw numbers, full precision), Markdown,
LaTeX (booktabs) and HTML (for the Snakemake report). The best value of each column (within a
block) is bold, as in the papers; a column may also underline the second best.

A row may carry reference values (the papers' published numbers, volbench.paper.published), shown
in parentheses beside its own, and a table may carry sections: titled lists under the table (the
published values of the paper table), written in every format (in the CSV as rows whose ``block``
is the section's key).

Readers' rules: a row that is lossless (or a lossless mode that is near-lossless on some data) is
not ranked (``Row.ranked``): "best" is among the lossy rows. Timing columns ignore differences
within the timing noise (:data:`NOISE`): when several rows are that close to the fastest, none is
bold. Footnotes are short markers (a, b, ...) after a label or a value (``Row.tags``,
``Row.cell_tags``), explained once under the table (``Table.footnotes``); only the markers in use
are listed, so the footnotes always agree with the rows.
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
    #: the unit of the raw values in the CSV (its header says it) where the cells carry their own,
    #: e.g. "MB" for a size shown as 5.42 kB / 1.23 MB
    unit: str = ""


@dataclass
class Row:
    label: str
    values: dict[str, Any]
    block: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    #: column key -> a reference value shown in parentheses beside ours (e.g. the published one)
    reference: dict[str, Any] = field(default_factory=dict)
    #: False: never marked best or second (lossless and lossless-mode rows)
    ranked: bool = True
    #: footnote keys (Table.footnotes) marked after the label, and after a column's value
    tags: list[str] = field(default_factory=list)
    cell_tags: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Section:
    """A titled list under a table: display cells under `columns`, and `records` (raw values, one
    dict per CSV row) for the CSV, where each row's ``block`` is `key`."""
    key: str
    title: str
    columns: list[str]
    rows: list[list[str]]
    records: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Table:
    name: str
    title: str
    columns: list[Col]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    block_header: str = ""
    method_header: str = "Method"
    sections: list[Section] = field(default_factory=list)
    #: footnote key -> its text; a marker letter is given to each key a row or cell uses
    footnotes: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.rows


DECIMALS = {"psnr": 2, "ssim": 3, "lpips": 3, "mb": 2, "ratio": 1, "minutes": 1, "ms": 0, "mvox": 1,
            "speedup": 2, "seconds": 0, "count": 0, "pct": 2, "db": 3, "bpv": 3, "num": 3}
#: timing kinds: (absolute, relative) noise of a measurement. Values of a column this close to the
#: best one are not told apart; the best is bold only when no other value is that close.
NOISE = {"seconds": (0.01, 0.1), "ms": (10.0, 0.1), "minutes": (0.01 / 60, 0.1), "mvox": (0.0, 0.1),
         "speedup": (0.0, 0.1)}


def num(v: Any) -> float | None:
    if v is None or isinstance(v, (str, bool)):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _sig3(x: float) -> str:
    """Three significant digits without an exponent: 5.42, 11.8, 118, 1234."""
    a = abs(x)
    return f"{x:.0f}" if a >= 100 else f"{x:.1f}" if a >= 10 else f"{x:.2f}"


def fmt_size_mb(f: float) -> str:
    """A size given in MB (10^6 bytes) in the unit that suits it: 512 B, 5.42 kB, 1.23 MB, 2.05 GB."""
    a = abs(f)
    if a >= 1000:
        return f"{_sig3(f / 1000)} GB"
    if a >= 1:
        return f"{_sig3(f)} MB"
    if a >= 1e-3:
        return f"{_sig3(f * 1000)} kB"
    return f"{f * 1e6:.0f} B"


def _size_rank(f: float) -> float:
    """A size in MB rounded as fmt_size_mb shows it."""
    text, unit = fmt_size_mb(f).split()
    return float(text) * {"GB": 1000.0, "MB": 1.0, "kB": 1e-3, "B": 1e-6}[unit]


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
        return _size_rank(f)
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
            vals = [(i, _rank_key(col, table.rows[i].values.get(col.key))) for i in idx if table.rows[i].ranked]
            vals = [(i, v) for i, v in vals if v is not None]
            if len(vals) < 2:
                continue  # a lone value is not "best" of anything
            distinct = sorted({v for _, v in vals}, reverse=(col.better == "max"))
            if len(distinct) < 2:
                continue  # all equal: nothing stands out
            if col.kind in NOISE:  # a timing: the best must stand out of the noise
                ab, rel = NOISE[col.kind]
                b = distinct[0]
                close = [i for i, v in vals if abs(v - b) <= max(ab, rel * abs(b))]
                if len(close) == 1:
                    marks[(close[0], col.key)] = "best"
                continue
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
    if k == "speedup":  # a ratio of times: "2.10× faster", "3.4× slower", never "0.3× faster"
        return fmt_speedup(f, times)
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
        return f"{f:#.3g}" if f < 100 else f"{f:.0f}"
    if k == "mb":
        return fmt_size_mb(f)
    if k == "pct":  # the unit is in the header
        return f"{f:+.2f}"
    if k == "db":
        return f"{f:+.3f}"
    return f"{f:.{DECIMALS.get(k, 3)}f}"


def fmt_speedup(f: float, times: str = "×", what: str = "") -> str:
    """A speed ratio (reference time / time) the readable way: 1.00×, 2.10× faster, 3.4× slower."""
    what = f" {what}" if what else ""
    if f <= 0 or not math.isfinite(f):
        return MISSING
    if abs(f - 1) < 0.005:
        return f"1.00{times}{what}"
    if f > 1:
        return f"{f:.2f}{times} faster{what}"
    return f"{1 / f:.2f}{times} slower{what}"


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


def footnote_markers(t: Table) -> dict[str, str]:
    """{footnote key: marker letter} of the footnotes the rows use, lettered in order of use."""
    used: dict[str, str] = {}
    for r in t.rows:
        for k in list(r.tags) + [k for c in t.columns for k in r.cell_tags.get(c.key, [])]:
            if k in t.footnotes and k not in used:
                used[k] = "abcdefghijklmnopqrstuvwxyz"[len(used) % 26]
    return used


def _sup(keys: list[str], markers: dict[str, str], style: str) -> str:
    letters = ",".join(markers[k] for k in dict.fromkeys(keys) if k in markers)
    if not letters:
        return ""
    return f"\\textsuperscript{{{letters}}}" if style == "tex" else f"<sup>{letters}</sup>"


def _label(r: Row, markers: dict[str, str], style: str) -> str:
    text = tex_escape(r.label) if style == "tex" else html.escape(r.label) if style == "html" else r.label
    return text + _sup(r.tags, markers, style)


def footnote_lines(t: Table, style: str) -> list[str]:
    """One line per footnote in use: its marker and its text."""
    markers = footnote_markers(t)
    out = []
    for k, m in markers.items():
        text = t.footnotes[k]
        if style == "tex":
            out.append(f"\\textsuperscript{{{m}}}\\,{tex_escape(text)}")
        else:
            out.append(f"<sup>{m}</sup> {html.escape(text) if style == 'html' else text}")
    return out


def _cell(col: Col, row: Row, mark: str | None, style: str, markers: dict[str, str] | None = None) -> str:
    """A cell: our value (marked when best), its footnote markers, then the reference value in
    parentheses, if any."""
    v = row.values.get(col.key)
    if style == "tex":
        s = tex_escape(v) if isinstance(v, str) else fmt_value(col, v, "tex")
    else:
        s = fmt_value(col, v, style)
        s = html.escape(s) if style == "html" else s
    s = _marked(s, mark, style) + _sup(row.cell_tags.get(col.key, []), markers or {}, style)
    ref = row.reference.get(col.key)
    if ref is not None and not (isinstance(ref, float) and math.isnan(ref)):
        r = fmt_value(col, ref, style)
        s += f" ({html.escape(r) if style == 'html' else r})"
    return s


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
    markers = footnote_markers(t)
    has_block = any(r.block for r in t.rows)
    grouped = any(c.group for c in t.columns)
    head = ([t.block_header or "Block"] if has_block else []) + [t.method_header]
    head += [((c.group + " ") if grouped and c.group else "") + c.label + _arrow(c, "md") for c in t.columns]
    lines = [f"**{t.title}**", ""]
    if t.rows:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] * (len(head) - len(t.columns))
                                    + ["---" if c.kind == "text" else "---:" for c in t.columns]) + "|")
        for i, r in enumerate(t.rows):
            cells = ([r.block] if has_block else []) + [_label(r, markers, "md")]
            for c in t.columns:
                cells.append(_cell(c, r, marks.get((i, c.key)), "md", markers))
            lines.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
        lines.append("")
    fn = footnote_lines(t, "md")
    if fn:
        lines += [x + "<br>" for x in fn[:-1]] + fn[-1:] + [""]
    for n in t.notes:
        lines.append(f"*{n}*")
        lines.append("")
    for sec in t.sections:
        lines += [f"**{sec.title}**", "", "| " + " | ".join(sec.columns) + " |",
                  "|" + "|".join(["---"] * len(sec.columns)) + "|"]
        lines += ["| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |" for cells in sec.rows]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def to_latex(t: Table) -> str:
    marks = best_marks(t)
    markers = footnote_markers(t)
    has_block = any(r.block for r in t.rows)
    lead = (1 if has_block else 0) + 1
    grouped = any(c.group for c in t.columns)
    out = ["% generated by volbench (volbench.paper.tables); needs \\usepackage{booktabs}",
           "\\begin{table}[t]", "\\centering", f"\\caption{{{tex_escape(t.title)}}}",
           f"\\label{{tab:{t.name}}}"]
    if t.rows:
        out.append("\\begin{tabular}{" + "l" * lead + "".join("l" if c.kind == "text" else "r" for c in t.columns)
                   + "}")
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
            cells = ([tex_escape(r.block) if r.block != prev else ""] if has_block else []) + [_label(r, markers, "tex")]
            prev = r.block
            for c in t.columns:
                cells.append(_cell(c, r, marks.get((i, c.key)), "tex", markers))
            out.append(" & ".join(cells) + " \\\\")
        out.append("\\bottomrule")
        out.append("\\end{tabular}")
    for line in footnote_lines(t, "tex"):
        out.append(f"\\par{{\\footnotesize {line}}}")
    for n in t.notes:
        out.append(f"\\par\\smallskip{{\\footnotesize {tex_escape(n)}}}")
    for sec in t.sections:
        out.append(f"\\par\\medskip{{\\footnotesize\\textbf{{{tex_escape(sec.title)}}}}}\\par\\smallskip")
        out.append("{\\scriptsize\\begin{tabular}{" + "l" * len(sec.columns) + "}")
        out.append("\\toprule")
        out.append(" & ".join(tex_escape(h) for h in sec.columns) + " \\\\")
        out.append("\\midrule")
        out += [" & ".join(tex_escape(x) for x in cells) + " \\\\" for cells in sec.rows]
        out.append("\\bottomrule")
        out.append("\\end{tabular}}")
    out.append("\\end{table}")
    return "\n".join(out) + "\n"


def to_html(t: Table) -> str:
    marks = best_marks(t)
    markers = footnote_markers(t)
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
            cells = ([f"<td>{e(r.block)}</td>"] if has_block else []) + [f"<td>{_label(r, markers, 'html')}</td>"]
            for c in t.columns:
                cls = "" if c.kind == "text" else " class='n'"
                cells.append(f"<td{cls}>{_cell(c, r, marks.get((i, c.key)), 'html', markers)}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
    else:
        out.append(f"<p><b>{e(t.title)}</b></p>")
    fn = footnote_lines(t, "html")
    if fn:
        out.append("<p class='fn'>" + "<br>".join(fn) + "</p>")
    for n in t.notes:
        out.append(f"<p><i>{e(n)}</i></p>")
    for sec in t.sections:
        out.append(f"<table class='{e(sec.key)}'><caption>{e(sec.title)}</caption><thead><tr>"
                   + "".join(f"<th>{e(h)}</th>" for h in sec.columns) + "</tr></thead><tbody>")
        out += ["<tr>" + "".join(f"<td>{e(x)}</td>" for x in cells) + "</tr>" for cells in sec.rows]
        out.append("</tbody></table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def to_frame(t: Table) -> pd.DataFrame:
    """Raw values (no rounding) with the cell's best mark, one row per table row."""
    marks = best_marks(t)
    refs = {k for r in t.rows for k in r.reference}
    recs = []
    for i, r in enumerate(t.rows):
        rec: dict[str, Any] = {"block": r.block, "method": r.label}
        rec.update({f"meta_{k}": v for k, v in r.meta.items()})
        for c in t.columns:
            key = (f"{c.group} {c.label}".strip() if c.group else c.label) + (f" ({c.unit})" if c.unit else "")
            rec[key] = r.values.get(c.key)
            if c.key in refs:
                rec[f"{key} (published)"] = r.reference.get(c.key)
            if (i, c.key) in marks:
                rec.setdefault("marks", [])
                rec["marks"].append(f"{key}:{marks[(i, c.key)]}")
        rec["marks"] = ";".join(rec.get("marks", []))
        flags = [k for k in r.tags if k in t.footnotes]
        flags += [f"{c.group + ' ' if c.group else ''}{c.label}:{k}" for c in t.columns for k in r.cell_tags.get(c.key, [])
                  if k in t.footnotes]
        if flags or any(x.tags or x.cell_tags for x in t.rows):
            rec["flags"] = ";".join(flags)
        recs.append(rec)
    if not recs:
        return pd.DataFrame({"note": t.notes or ["empty"]})
    return pd.DataFrame(recs)


def sections_frame(t: Table) -> pd.DataFrame:
    """The sections' records, one CSV row each, with the section's key as ``block``."""
    recs = []
    for s in t.sections:
        rows = s.records or [dict(zip(s.columns, cells)) for cells in s.rows]
        recs += [{"block": s.key, **rec} for rec in rows]
    return pd.DataFrame(recs)


def to_csv(t: Table) -> str:
    """The table's frame, then its sections' rows (block = the section's key)."""
    df = to_frame(t)
    if t.sections:
        df = pd.concat([df, sections_frame(t)], ignore_index=True)
    return df.to_csv(index=False)


def write_table(t: Table, out_dir: str | os.PathLike) -> list[Path]:
    """Write <name>.csv/.md/.tex/.html into out_dir, each atomically."""
    out_dir = Path(out_dir)
    paths = []
    for ext, fn in (("csv", to_csv), ("md", to_markdown), ("tex", to_latex), ("html", to_html)):
        p = out_dir / f"{t.name}.{ext}"
        atomic_write_text(p, fn(t))
        paths.append(p)
    return paths
