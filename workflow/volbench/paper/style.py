"""How the figures draw each codec instance, and what they call it.

The hue of an instance's colour comes from its codec's family (Codec.family, the summary's
``family`` column): every video codec is blue, every Gaussian codec brown, and so on. The instances
of one family differ by marker, line style, marker fill and lightness, given in the order of their
sorted names, so an instance looks the same in every figure of a run. The label is the codec's
display name (Codec.display_name), with the instance in brackets when it is not the codec type
itself. Nothing here knows a codec by name.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Iterable

import matplotlib
import matplotlib.colors
import pandas as pd

from .selection import ablation_mask, instance_label

#: tab10 index of each family's hue; a family not listed gets one of SPARE_HUES (by its name)
FAMILY_HUES = {"video": 0, "wavelet": 1, "float": 2, "lossless": 3, "neural": 4, "gaussian": 5, "other": 7}
SPARE_HUES = (6, 8, 9)
MARKERS = "osD^v<>Ph*"
LINESTYLES = ("-", "--", "-.", ":")
#: lightness of the k-th instance of a family: 0 = the family's hue, < 0 darker, > 0 lighter
SHADES = (0.0, -0.3, 0.3, 0.5, -0.5)


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


def _hue_index(family: str) -> int:
    if family in FAMILY_HUES:
        return FAMILY_HUES[family]
    return SPARE_HUES[zlib.crc32(family.encode()) % len(SPARE_HUES)]


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
    if df is not None and len(df):
        main = df[~ablation_mask(df)]
        for c, t, n, f in zip(main["codec"], main["codec_type"], main["display_name"], main["family"]):
            info.setdefault(str(c), (str(t), str(n), str(f)))
    for c in extra:
        info.setdefault(str(c), (str(c), str(c), "other"))
    families: dict[str, list[str]] = {}
    for c in sorted(info):
        families.setdefault(info[c][2], []).append(c)
    cmap = matplotlib.colormaps["tab10"]
    out = {}
    for family, codecs in families.items():
        h = _hue_index(family)
        for k, c in enumerate(codecs):
            ctype, name, _ = info[c]
            out[c] = Style(shade(cmap(h), SHADES[k % len(SHADES)]), MARKERS[(h + k) % len(MARKERS)],
                           LINESTYLES[k % len(LINESTYLES)], k == 0, instance_label(c, ctype, name))
    return out
