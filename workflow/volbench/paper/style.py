"""How the figures draw each codec instance, and what they call it.

The hue of an instance's colour comes from its codec's family (Codec.family, the summary's
``family`` column): every video codec is blue, every Gaussian codec brown, and so on. The instances
of one family get distinct colours of that hue (FAMILY_COLORS, darker and lighter), and differ by
marker, line style and marker fill too: the instances that are codec types themselves first, then
the others, each group by name. Every figure of a run takes the styles of the same summary, so an
instance looks the same in all of them, whatever a panel or dataset leaves out. The label follows
the tables' naming scheme (selection.instance_label: "HEVC (x265), lossless"). Nothing here knows
a codec by name.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Iterable

import matplotlib
import matplotlib.colors
import pandas as pd

from .selection import ablation_mask, instance_label, instance_labels

#: tab10 index of each family's hue; a family not listed gets one of SPARE_HUES (by its name)
FAMILY_HUES = {"video": 0, "wavelet": 1, "float": 2, "lossless": 3, "neural": 4, "gaussian": 5, "other": 7}
SPARE_HUES = (6, 8, 9)
#: the colours of a hue (tab10 index): the hue itself, then darker and lighter ones that stay
#: apart from each other and from the other hues' colours
FAMILY_COLORS = {
    0: ("#1f77b4", "#0b3d6b", "#7fb8e6", "#4f7396"),  # blue
    1: ("#ff7f0e", "#a34a00", "#ffb877", "#c98f50"),  # orange
    2: ("#2ca02c", "#125c12", "#8fd88f", "#6f8f3a"),  # green
    3: ("#d62728", "#7a0f10", "#f39a9a", "#b0585a"),  # red
    4: ("#9467bd", "#4b2a78", "#c9b0e6", "#7a6a96"),  # purple
    5: ("#8c564b", "#40190f", "#cf8f7a", "#a3704a"),  # brown
    6: ("#e377c2", "#8f2c73", "#f6bde3", "#b0779e"),  # pink
    7: ("#7f7f7f", "#333333", "#c2c2c2", "#5c6a73"),  # grey
    8: ("#bcbd22", "#6b6c0c", "#e0e07c", "#9a9a5a"),  # olive
    9: ("#17becf", "#0a6f79", "#93e3ec", "#4e9aa3"),  # cyan
}
MARKERS = "osD^v<>Ph*"
LINESTYLES = ("-", "--", "-.", ":")
#: lightness of the k-th rate point of an instance (training dynamics): 0 = the instance's colour
SHADES = (0.0, 0.35, -0.3, 0.55, -0.5)


@dataclass(frozen=True)
class Style:
    color: tuple[float, float, float]
    marker: str
    linestyle: str
    filled: bool
    label: str

    def line(self) -> dict[str, Any]:
        """Keyword arguments of Axes.plot."""
        kw: dict[str, Any] = {"color": self.color, "marker": self.marker, "linestyle": self.linestyle}
        if not self.filled:
            kw["markerfacecolor"] = "none"
        return kw


def _hue_index(family: str, spare: dict[str, int] | None = None) -> int:
    """The hue of a family: its own, else a spare one (`spare`: the families without a hue of their
    own in the figure's summary, in sorted order, so that two of them get different hues)."""
    if family in FAMILY_HUES:
        return FAMILY_HUES[family]
    if spare and family in spare:
        return SPARE_HUES[spare[family] % len(SPARE_HUES)]
    return SPARE_HUES[zlib.crc32(family.encode()) % len(SPARE_HUES)]


def family_color(family: str, k: int = 0, spare: dict[str, int] | None = None) -> tuple[float, float, float]:
    """The k-th colour of a family's hue (k >= 4: the hue shaded further)."""
    cols = FAMILY_COLORS[_hue_index(family, spare)]
    c = matplotlib.colors.to_rgb(cols[k % len(cols)])
    return c if k < len(cols) else shade(c, SHADES[(k // len(cols)) % len(SHADES)])


def shade(color, amount: float) -> tuple[float, float, float]:
    """The colour mixed with white (amount > 0) or black (amount < 0) by |amount|."""
    r, g, b = matplotlib.colors.to_rgb(color)
    target = 1.0 if amount > 0 else 0.0
    a = abs(amount)
    return (r + (target - r) * a, g + (target - g) * a, b + (target - b) * a)


def styles(df: pd.DataFrame | None, extra: Iterable[str] = ()) -> dict[str, Style]:
    """{codec instance: Style} of the main (non-ablation) instances of a prepared summary, plus the
    instances in `extra` that it lacks (family "other", named by themselves)."""
    info: dict[str, tuple[str, str, str]] = {}  # codec -> (codec type, display name, family)
    labels: dict[str, str] = {}
    if df is not None and len(df):
        main = df[~ablation_mask(df)]
        for c, t, n, f in zip(main["codec"], main["codec_type"], main["display_name"], main["family"]):
            info.setdefault(str(c), (str(t), str(n), str(f)))
        if "lossless" in main.columns and "status" in main.columns:
            labels = instance_labels(main)  # a lossless mode named by what it achieved
    for c in extra:
        info.setdefault(str(c), (str(c), str(c), "other"))
    families: dict[str, list[str]] = {}
    for c in sorted(info, key=lambda c: (c != info[c][0], c)):  # codec types first, then by name
        families.setdefault(info[c][2], []).append(c)
    spare = {f: i for i, f in enumerate(sorted(f for f in families if f not in FAMILY_HUES))}
    out = {}
    for family, codecs in families.items():
        h = _hue_index(family, spare)
        for k, c in enumerate(codecs):
            ctype, name, _ = info[c]
            out[c] = Style(family_color(family, k, spare), MARKERS[(h + k) % len(MARKERS)],
                           LINESTYLES[k % len(LINESTYLES)], k == 0, labels.get(c) or instance_label(c, ctype, name))
    return out
