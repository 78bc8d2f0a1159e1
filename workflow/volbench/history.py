"""history.csv: the training curve a training codec (``Codec.trains``) writes next to its file.

One schema for every codec, in this column order (further columns of a codec follow, sorted):

* ``iteration``: the training step;
* ``loss``: the codec's own training objective;
* ``psnr``, ``mse``: on the [0, 1] intensity scale (dB; of the step's batch or slices while
  training);
* ``n_gaussians``: the number of Gaussians (Gaussian codecs; empty otherwise);
* ``seconds``: since the training started;
* ``stage``: ``train``, or ``decoded_file`` for a last row that scores the decoded file itself.

The training-dynamics figure (volbench.paper.figures) reads these files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from .errors import VolbenchError
from .io import write_csv

COLUMNS = ("iteration", "loss", "psnr", "mse", "n_gaussians", "seconds", "stage")
FILE = "history.csv"


def write(workdir: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write rows as workdir/history.csv (the schema's columns first), atomically."""
    rows = list(rows)
    cols = list(COLUMNS) + sorted({k for r in rows for k in r} - set(COLUMNS))
    path = Path(workdir) / FILE
    write_csv(path, rows, cols)
    return path


def read(path: str | os.PathLike):
    """A history.csv as a pandas frame with every column of the schema (missing ones empty)."""
    import pandas as pd

    try:
        h = pd.read_csv(path)
    except Exception as exc:  # pandas raises several kinds
        raise VolbenchError(f"{path}: not a readable {FILE} ({exc}); re-run that encode job") from None
    if "iteration" not in h.columns:
        raise VolbenchError(f"{path}: {FILE} has no 'iteration' column; re-run that encode job")
    for c in COLUMNS:
        if c not in h.columns:
            h[c] = None
    return h
