"""Paper outputs: the seeds' tables (CSV, Markdown, LaTeX, HTML), BD-rate against an anchor codec,
and the figures (rate-distortion, speed bubble chart, training dynamics, qualitative panels).

Everything here reads ``results/tables/summary.csv`` (one row per dataset x codec x point) and,
for the figures that need voxels, the results tree (``results/data``, ``results/decoded``,
``results/encoded/.../history.csv``). Nothing here knows how a codec works: method names come
from the ``codec_type`` column.
"""
