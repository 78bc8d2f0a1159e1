"""Paper outputs: the papers' tables (CSV, Markdown, LaTeX, HTML), BD-rate against an anchor codec,
and the figures (rate-distortion, speed bubble chart, training dynamics, qualitative panels).

Everything here reads ``results/tables/summary.csv`` (one row per dataset x codec x point) and,
for the figures that need voxels, the results tree (``results/data``, ``results/decoded``,
``results/encoded/.../history.csv``). Nothing here knows a codec by name: each summary row carries
the codec's own description (display name, family, table order, whether it trains).
"""
