"""The tables of the GaussianPile paper (focus-aware Gaussian splatting for slice-based volumes):

* ``gaussianpile_table1``: 2D PSNR, SSIM and encode (training) time per dataset;
* ``gaussianpile_table2``: compressed size in MB and compression ratio (+ the "w/o Quant." row);
* ``gaussianpile_table3``: 3D PSNR and SSIM;
* ``gaussianpile_table4``: GaussianPile ablation (sigma_z, initial count M, initialisation);
* ``gaussianpile_table5``: the anisotropic EM datasets: 2D/3D fidelity, compression ratio, time.

Tables 1-3 take the datasets other than EM (``modality: em``), Table 5 the EM ones.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .ablation import ablation_entries, ablation_table, entry_label, param_label
from .formatting import Table
from .selection import Context, wide_table

PSNR2, SSIM2 = ("psnr_2d", "PSNR", "max", "psnr"), ("ssim_2d", "SSIM", "max", "ssim")
PSNR3, SSIM3 = ("psnr_3d", "PSNR", "max", "psnr"), ("ssim_3d", "SSIM", "max", "ssim")
TIME = ("encode_seconds", "Time", "min", "seconds")
#: the codec type of the paper's method (its ablations)
METHOD = "gaussianpile"


def table1(df: pd.DataFrame, ctx: Context) -> Table:
    return wide_table("gaussianpile_table1", "GaussianPile Table 1. 2D quantitative comparison (slice PSNR, "
                      "SSIM, encode/training time)", df, ctx, ctx.datasets_by_modality(df, em=False),
                      [PSNR2, SSIM2, TIME],
                      "No rows: run config/paper.yaml (datasets other than EM) to fill this table.")


def _quant_rows(df: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(codec, point, label) of the "w/o Quant." ablation instances."""
    seen: dict[tuple[str, str], str] = {}
    for e in ablation_entries(df, METHOD, lambda keys: any("quant" in k for k in keys)):
        r = e["row"]
        seen.setdefault((r["codec"], r["point"]), f"{r['display_name']} {entry_label(e)}")
    return [(c, p, lab) for (c, p), lab in seen.items()]


def table2(df: pd.DataFrame, ctx: Context) -> Table:
    return wide_table("gaussianpile_table2", "GaussianPile Table 2. Compression: compressed size "
                      "(kB, MB = 10^3, 10^6 bytes) and compression ratio", df, ctx,
                      ctx.datasets_by_modality(df, em=False),
                      [("size_mb", "Mem.", "min", "mb"), ("compression_ratio", "Comp.", "max", "ratio")],
                      "No rows: run config/paper.yaml to fill this table (the 'w/o Quant.' row comes from "
                      "config/ablation.yaml).", extra=_quant_rows)


def table3(df: pd.DataFrame, ctx: Context) -> Table:
    return wide_table("gaussianpile_table3", "GaussianPile Table 3. 3D quantitative results (volume PSNR, SSIM)",
                      df, ctx, ctx.datasets_by_modality(df, em=False), [PSNR3, SSIM3],
                      "No rows: run config/paper.yaml to fill this table.")


def _ref_label(key: str, params: dict[str, Any], dz: float | None = None) -> str:
    return param_label(key, params, METHOD, dz, "GaussianPile (reference)")


def table4(df: pd.DataFrame, ctx: Context) -> Table:
    return ablation_table(
        "gaussianpile_table4", "GaussianPile Table 4. GaussianPile ablation (σz, initial count M, "
        "initialisation); the reference configuration is marked (ours)", df, ctx, METHOD,
        lambda keys: bool(keys) and not any("quant" in k for k in keys),
        [PSNR2, SSIM2, TIME, ("n_gaussians", "Gau.", None, "count")], _ref_label,
        "No ablation rows in the summary: run with --configfile config/paper.yaml config/ablation.yaml "
        "(codec instances ablation_gp_*) to produce this table.")


def table5(df: pd.DataFrame, ctx: Context) -> Table:
    m = [("psnr_2d", "2D PSNR", "max", "psnr"), ("ssim_2d", "2D SSIM", "max", "ssim"),
         ("psnr_3d", "3D PSNR", "max", "psnr"), ("ssim_3d", "3D SSIM", "max", "ssim"),
         ("compression_ratio", "CR", "max", "ratio"), TIME]
    return wide_table("gaussianpile_table5", "GaussianPile Table 5. Highly anisotropic ssEM datasets: 2D and 3D "
                      "fidelity, compression ratio, time", df, ctx, ctx.datasets_by_modality(df, em=True), m,
                      "No rows: this table needs datasets with modality: em (ISBI 2012, CREMI in "
                      "config/paper.yaml).")


TABLES = {"gaussianpile_table1": table1, "gaussianpile_table2": table2, "gaussianpile_table3": table3,
          "gaussianpile_table4": table4, "gaussianpile_table5": table5}
