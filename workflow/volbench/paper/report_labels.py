"""What the Snakemake report calls each output: its categories in reading order and the labels its
lists show instead of file paths (``report(..., category=..., labels=...)`` in the rules).

The report lists categories alphabetically, so their names carry their place in the reading order.
"""

from __future__ import annotations

#: the report's categories, in reading order
CATEGORIES = {
    "summary": "1. Summary",
    "tables": "2. Paper tables",
    "rd": "3. Rate-distortion",
    "speed": "4. Speed",
    "training": "5. Training",
    "qualitative": "6. Qualitative",
    "environment": "7. Environment",
}

#: paper table -> (the table it reproduces, what it shows)
TABLES = {
    "gaussianpile_table1": ("GaussianPile Table 1", "2D PSNR, SSIM and encode (training) time per dataset"),
    "gaussianpile_table2": ("GaussianPile Table 2", "compressed size and compression ratio"),
    "gaussianpile_table3": ("GaussianPile Table 3", "3D PSNR and SSIM"),
    "gaussianpile_table4": ("GaussianPile Table 4", "GaussianPile ablation: sigma_z, initial count, initialisation"),
    "gaussianpile_table5": ("GaussianPile Table 5", "anisotropic EM datasets: 2D/3D fidelity, ratio, time"),
    "volmicro_table2": ("VolMicro Table 2", "rate-distortion at every rate point"),
    "volmicro_table3": ("VolMicro Table 3", "matched-bitrate comparison, decode time and throughput"),
    "volmicro_table5": ("VolMicro Table 5", "VolMicro component ablation"),
    "volmicro_table8": ("VolMicro Table 8 (variant)", "decode cutoff against quality and decode speed"),
    "bdrate": ("BD-rate (volbench)", "BD-rate and BD-PSNR of every codec against the anchor"),
}

#: rate-distortion figure -> its label (rd.png: the overview; rd_<metric>.png: the paper's)
RD_FIGURES = {
    "rd": "overview: 2D/3D PSNR, 3D SSIM, LPIPS",
    "rd_psnr_2d": "2D PSNR", "rd_psnr_3d": "3D PSNR", "rd_ssim_3d": "3D SSIM", "rd_lpips": "LPIPS",
    "rd_ssim_2d": "2D SSIM", "rd_psnr_fg": "foreground PSNR", "rd_ssim_fg": "foreground SSIM",
}


def table_labels(table: str) -> dict[str, str]:
    """The report labels of a paper table (a table not listed: its name)."""
    paper, what = TABLES.get(table, (table, ""))
    return {"table": paper, "shows": what}


def rd_labels(figure: str, dataset: str) -> dict[str, str]:
    return {"dataset": dataset, "figure": RD_FIGURES.get(figure, figure)}
