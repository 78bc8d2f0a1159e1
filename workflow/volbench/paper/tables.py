"""The papers' tables, regenerated from ``results/tables/summary.csv``: the registry.

Each source paper has its own module, named after its method, and each table is named
``<method>_table<N>`` after the paper's own numbering:

* gaussianpile_tables: ``gaussianpile_table1`` ... ``gaussianpile_table5``;
* volmicro_tables: ``volmicro_table2``, ``volmicro_table3``, ``volmicro_table5``, ``volmicro_table8``.

The table model and its formats are in formatting, reading the summary and choosing rows in
selection, the ablation tables' machinery in ablation. A table whose rows are absent from the
summary is still written, with a note naming the configuration that produces it. Every table also
shows the seeds' published numbers (published: beside ours where method and dataset correspond,
and as a "published" section under the table).
"""

from __future__ import annotations

from typing import Callable

import pandas as pd

from ..errors import VolbenchError
from . import gaussianpile_tables, published, volmicro_tables
from .formatting import Table
from .selection import Context

#: every table: name -> generator(summary, context)
GENERATORS: dict[str, Callable[[pd.DataFrame, Context], Table]] = {
    **gaussianpile_tables.TABLES,
    **volmicro_tables.TABLES,
}


def build(name: str, df: pd.DataFrame, ctx: Context | None = None) -> Table:
    if name not in GENERATORS:
        raise VolbenchError(f"unknown paper table {name!r}; choose one of {sorted(GENERATORS)}")
    return published.attach(GENERATORS[name](df, ctx or Context()), df)
