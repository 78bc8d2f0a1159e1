"""Render results/tables/environment.json (hardware and software of the run) as Markdown and HTML."""

from __future__ import annotations

import html
from typing import Any


def flatten(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dict -> sorted (dotted key, value) pairs; None shown as 'not installed / none'."""
    out: list[tuple[str, str]] = []
    if isinstance(obj, dict):
        for k in sorted(obj):
            out += flatten(obj[k], f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        out.append((prefix, ", ".join(str(x) for x in obj)))
    else:
        out.append((prefix, "none / not installed" if obj is None else str(obj)))
    return out


def render(env: dict[str, Any]) -> tuple[str, str]:
    pairs = flatten(env)
    md = ["**Hardware and software of the run**", "", "| item | value |", "|---|---|"]
    md += [f"| {k} | {v.replace('|', '/')} |" for k, v in pairs]
    e = html.escape
    h = ["<!DOCTYPE html><html><head><meta charset='utf-8'><style>table{border-collapse:collapse;"
         "font-family:sans-serif;font-size:13px}td,th{border:1px solid #bbb;padding:3px 7px}</style></head><body>",
         "<table><caption><b>Hardware and software of the run</b></caption><tr><th>item</th><th>value</th></tr>"]
    h += [f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in pairs]
    h.append("</table></body></html>")
    return "\n".join(md) + "\n", "\n".join(h) + "\n"
