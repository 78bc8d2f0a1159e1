# Paper outputs: the seeds' tables, BD-rate against the anchor, and the figures
# (docs/reproduce-papers.md). Everything reads results/tables/summary.csv; the figures that need
# voxels also read results/data and results/decoded, the training plot results/encoded/.../history.csv.
from volbench.paper.tables import GENERATORS as _PAPER_GENERATORS  # noqa: E402

PAPER_TABLES = list(_PAPER_GENERATORS)
PAPER_RD_METRICS = ["psnr_2d", "psnr_3d", "ssim_3d", "lpips"]
PAPER_TRAINING_TYPES = {"siren", "volmicro", "gaussianpile", "gs3d_slice"}
# the parts of the config the paper outputs use (dataset modality, codec order/types, anchor, matched_bpp)
PAPER_CFG = json.dumps(
    {k: config[k] for k in ("datasets", "codecs", "anchor", "matched_bpp", "paper") if k in config},
    sort_keys=True,
)
PAPER_MATCHED_BPP = float((config.get("matched_bpp") or [0.073])[0])


wildcard_constraints:
    table="seed00[0-9]_table[0-9]+",


def _paper_codec_type(codec):
    return codec_entry(codec).get("codec", codec)


def paper_training_cells(dataset):
    return [
        f"results/encoded/{d}/{c}/{p}"
        for d, c, p in CELLS
        if d == dataset and _paper_codec_type(c) in PAPER_TRAINING_TYPES
    ]


def paper_training_datasets():
    return [d for d in DATASETS if paper_training_cells(d)]


def paper_decoded_cells(dataset):
    return [f"results/decoded/{d}/{c}/{p}" for d, c, p in CELLS if d == dataset]


def paper_targets():
    """Every final output of the paper rules (the lead's rule all includes these)."""
    t = []
    for name in PAPER_TABLES:
        t += [f"results/tables/paper/{name}.{ext}" for ext in ("csv", "md", "tex", "html")]
    t += [f"results/tables/paper/bdrate.{ext}" for ext in ("csv", "md", "tex", "html")]
    t += [f"results/tables/paper/environment.{ext}" for ext in ("md", "html")]
    t += [f"results/plots/bubble.{ext}" for ext in ("png", "pdf")]
    for d in DATASETS:
        t += [f"results/plots/{d}/rd_{m}.{ext}" for m in PAPER_RD_METRICS for ext in ("png", "pdf")]
        t += [f"results/plots/{d}/{n}.{ext}" for n in ("qualitative", "error_maps") for ext in ("png", "pdf")]
    for d in paper_training_datasets():
        t += [f"results/plots/{d}/training_dynamics.{ext}" for ext in ("png", "pdf")]
    return t


rule paper_table:
    input:
        "results/tables/summary.csv",
    output:
        csv="results/tables/paper/{table}.csv",
        md="results/tables/paper/{table}.md",
        tex="results/tables/paper/{table}.tex",
        html=report("results/tables/paper/{table}.html", caption="../report/paper_table.rst",
                    category="Paper tables", subcategory="{table}"),
    params:
        cfg=PAPER_CFG,
    log:
        "logs/paper/table_{table}.log",
    benchmark:
        "logs/benchmarks/paper/table_{table}.tsv"
    conda:
        CONDA_ENV
    shell:
        "{VB} paper-tables --summary {input} --config-json {params.cfg:q} --results results"
        " --table {wildcards.table} --out results/tables/paper > {log} 2>&1"
        " || {{ tail -n 3 {log} >&2; exit 1; }}"


rule paper_bdrate:
    input:
        "results/tables/summary.csv",
    output:
        csv="results/tables/paper/bdrate.csv",
        md="results/tables/paper/bdrate.md",
        tex="results/tables/paper/bdrate.tex",
        html=report("results/tables/paper/bdrate.html", caption="../report/bdrate.rst",
                    category="Paper tables", subcategory="BD-rate"),
    params:
        cfg=PAPER_CFG,
        anchor=config.get("anchor", "hevc"),
    log:
        "logs/paper/bdrate.log",
    benchmark:
        "logs/benchmarks/paper/bdrate.tsv"
    conda:
        CONDA_ENV
    shell:
        "{VB} bdrate --summary {input} --config-json {params.cfg:q} --anchor {params.anchor:q}"
        " --method pchip --out results/tables/paper > {log} 2>&1"
        " || {{ tail -n 3 {log} >&2; exit 1; }}"


rule paper_environment:
    input:
        "results/tables/environment.json",
    output:
        md="results/tables/paper/environment.md",
        html=report("results/tables/paper/environment.html", caption="../report/paper_environment.rst",
                    category="Environment"),
    log:
        "logs/paper/environment.log",
    conda:
        CONDA_ENV
    shell:
        "{VB} paper-environment --env-json {input} --out results/tables/paper/environment > {log} 2>&1"
        " || {{ tail -n 3 {log} >&2; exit 1; }}"


rule paper_rd:
    input:
        "results/tables/summary.csv",
    output:
        psnr_2d=report("results/plots/{dataset}/rd_psnr_2d.png", caption="../report/paper_rd.rst",
                       category="Rate-distortion (paper)", subcategory="{dataset}"),
        psnr_3d=report("results/plots/{dataset}/rd_psnr_3d.png", caption="../report/paper_rd.rst",
                       category="Rate-distortion (paper)", subcategory="{dataset}"),
        ssim_3d=report("results/plots/{dataset}/rd_ssim_3d.png", caption="../report/paper_rd.rst",
                       category="Rate-distortion (paper)", subcategory="{dataset}"),
        lpips=report("results/plots/{dataset}/rd_lpips.png", caption="../report/paper_rd.rst",
                     category="Rate-distortion (paper)", subcategory="{dataset}"),
        pdfs=expand("results/plots/{{dataset}}/rd_{m}.pdf", m=PAPER_RD_METRICS),
    params:
        cfg=PAPER_CFG,
    log:
        "logs/paper/rd_{dataset}.log",
    benchmark:
        "logs/benchmarks/paper/rd_{dataset}.tsv"
    conda:
        CONDA_ENV
    shell:
        "{VB} figures rd --summary {input} --config-json {params.cfg:q} --dataset {wildcards.dataset}"
        " --out results/plots/{wildcards.dataset} > {log} 2>&1"
        " || {{ tail -n 3 {log} >&2; exit 1; }}"


rule paper_bubble:
    input:
        "results/tables/summary.csv",
    output:
        png=report("results/plots/bubble.png", caption="../report/paper_bubble.rst", category="Speed"),
        pdf="results/plots/bubble.pdf",
    params:
        cfg=PAPER_CFG,
    log:
        "logs/paper/bubble.log",
    benchmark:
        "logs/benchmarks/paper/bubble.tsv"
    conda:
        CONDA_ENV
    shell:
        "{VB} figures bubble --summary {input} --config-json {params.cfg:q} --out results/plots/bubble > {log} 2>&1"
        " || {{ tail -n 3 {log} >&2; exit 1; }}"


rule paper_training:
    input:
        summary="results/tables/summary.csv",
        cells=lambda w: paper_training_cells(w.dataset),
    output:
        png=report("results/plots/{dataset}/training_dynamics.png", caption="../report/paper_training.rst",
                   category="Training dynamics", subcategory="{dataset}"),
        pdf="results/plots/{dataset}/training_dynamics.pdf",
    params:
        cfg=PAPER_CFG,
    log:
        "logs/paper/training_{dataset}.log",
    benchmark:
        "logs/benchmarks/paper/training_{dataset}.tsv"
    conda:
        CONDA_ENV
    shell:
        "{VB} figures training --results results --config-json {params.cfg:q} --dataset {wildcards.dataset}"
        " --out results/plots/{wildcards.dataset}/training_dynamics > {log} 2>&1"
        " || {{ tail -n 3 {log} >&2; exit 1; }}"


rule paper_qualitative:
    input:
        summary="results/tables/summary.csv",
        orig="results/data/{dataset}/volume.tif",
        decoded=lambda w: paper_decoded_cells(w.dataset),
    output:
        png=report("results/plots/{dataset}/qualitative.png", caption="../report/paper_qualitative.rst",
                   category="Qualitative", subcategory="{dataset}"),
        pdf="results/plots/{dataset}/qualitative.pdf",
        err=report("results/plots/{dataset}/error_maps.png", caption="../report/paper_error_maps.rst",
                   category="Qualitative", subcategory="{dataset}"),
        err_pdf="results/plots/{dataset}/error_maps.pdf",
    params:
        cfg=PAPER_CFG,
        bpv=PAPER_MATCHED_BPP,
    log:
        "logs/paper/qualitative_{dataset}.log",
    benchmark:
        "logs/benchmarks/paper/qualitative_{dataset}.tsv"
    conda:
        CONDA_ENV
    shell:
        "{VB} figures qualitative --summary {input.summary} --results results --config-json {params.cfg:q}"
        " --dataset {wildcards.dataset} --bpv {params.bpv} --out results/plots/{wildcards.dataset}/qualitative"
        " --out-errors results/plots/{wildcards.dataset}/error_maps > {log} 2>&1"
        " || {{ tail -n 3 {log} >&2; exit 1; }}"
