# Paper outputs: the seeds' tables, BD-rate against the anchor, and the figures
# (docs/reproduce-papers.md). Everything reads results/tables/summary.csv; the figures that need
# voxels also read results/data and results/decoded, the training plot results/encoded/.../history.csv.
from volbench.paper.tables import GENERATORS as _PAPER_GENERATORS  # noqa: E402


# the report's front page (snakemake --report): what ran, and where each section comes from
report: "../report/workflow.rst"

PAPER_TABLES = list(_PAPER_GENERATORS)
# `paper:` options of the config (docs/reproduce-papers.md, "Options")
PAPER_OPTS = dict(config.get("paper") or {})
_PAPER_KNOWN = {"rd_metrics", "qualitative_bpv", "qualitative_slice", "bd_method", "bd_min_points", "bd_min_overlap"}
if set(PAPER_OPTS) - _PAPER_KNOWN:
    raise ValueError(f"config paper: unknown option(s) {sorted(set(PAPER_OPTS) - _PAPER_KNOWN)}; "
                     f"known: {sorted(_PAPER_KNOWN)}")
PAPER_RD_METRICS = list(PAPER_OPTS.get("rd_metrics") or ["psnr_2d", "psnr_3d", "ssim_3d", "lpips"])
_PAPER_RD_ALLOWED = ["psnr_2d", "ssim_2d", "psnr_3d", "ssim_3d", "lpips", "psnr_fg", "ssim_fg"]
if not set(PAPER_RD_METRICS) <= set(_PAPER_RD_ALLOWED):
    raise ValueError(f"config paper.rd_metrics: {sorted(set(PAPER_RD_METRICS) - set(_PAPER_RD_ALLOWED))} unknown; "
                     f"choose from {_PAPER_RD_ALLOWED}")
if str(PAPER_OPTS.get("bd_method", "pchip")) not in ("pchip", "akima", "cubic"):
    raise ValueError("config paper.bd_method: one of pchip, akima, cubic")
PAPER_BD_ARGS = "--method {} --min-points {} --min-overlap {}".format(
    PAPER_OPTS.get("bd_method", "pchip"), int(PAPER_OPTS.get("bd_min_points", 4)),
    float(PAPER_OPTS.get("bd_min_overlap", 0.75)))
PAPER_TRAINING_TYPES = {"siren", "volmicro", "gaussianpile", "gs3d_slice"}
# the parts of the config the paper outputs use (dataset modality, codec order/types, anchor, matched_bpp)
PAPER_CFG = json.dumps(
    {k: config[k] for k in ("datasets", "codecs", "anchor", "matched_bpp", "paper") if k in config},
)  # not sort_keys: the config's order of datasets, codecs and rate points is the tables' order
PAPER_MATCHED_BPP = float(PAPER_OPTS.get("qualitative_bpv") or (config.get("matched_bpp") or [0.073])[0])


def paper_slice(wildcards):
    """--slice of the qualitative figure: paper.qualitative_slice, one index or {dataset: index}."""
    z = PAPER_OPTS.get("qualitative_slice")
    if isinstance(z, dict):
        z = z.get(wildcards.dataset)
    return "" if z is None else f"--slice {int(z)}"


wildcard_constraints:
    table="seed00[0-9]_table[0-9]+",


# Datasets given by `path:` (behind a registration page, or without a published checksum): a
# missing file is not a planning error. `snakemake -n` plans the whole run; the job that would
# "make" a missing file stops with the dataset's `instructions:` (where to get it, how to convert
# it). Only files missing when the workflow is parsed get this rule: an existing file is a plain
# source file, so no rule (and no --forceall) can ever delete or replace a user's data.
PAPER_MANUAL = {
    str(e["path"]): (d, str(e.get("instructions", "")))
    for d, e in config["datasets"].items()
    if isinstance(e, dict) and e.get("path") and not os.path.exists(str(e["path"]))
}

if PAPER_MANUAL:

    localrules:
        manual_dataset,

    rule manual_dataset:
        output:
            "{manual_source}",
        wildcard_constraints:
            manual_source="|".join(re.escape(p) for p in sorted(PAPER_MANUAL)),
        params:
            msg=lambda w: "volbench: error: dataset {d}: {p} does not exist; get the file by hand and place it "
            "there ({i})".format(d=PAPER_MANUAL[w.manual_source][0], p=w.manual_source,
                                  i=PAPER_MANUAL[w.manual_source][1] or "see the comment above its entry in the config"),
        shell:
            "echo {params.msg:q} >&2; exit 1"


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
        " {PAPER_BD_ARGS} --out results/tables/paper > {log} 2>&1"
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
        [report(f"results/plots/{{dataset}}/rd_{m}.png", caption="../report/paper_rd.rst",
                category="Rate-distortion (paper)", subcategory="{dataset}") for m in PAPER_RD_METRICS],
        pdfs=expand("results/plots/{{dataset}}/rd_{m}.pdf", m=PAPER_RD_METRICS),
    params:
        cfg=PAPER_CFG,
        metrics=" ".join(PAPER_RD_METRICS),
    log:
        "logs/paper/rd_{dataset}.log",
    benchmark:
        "logs/benchmarks/paper/rd_{dataset}.tsv"
    conda:
        CONDA_ENV
    shell:
        "{VB} figures rd --summary {input} --config-json {params.cfg:q} --dataset {wildcards.dataset}"
        " --metrics {params.metrics} --out results/plots/{wildcards.dataset} > {log} 2>&1"
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
        slice=paper_slice,
    log:
        "logs/paper/qualitative_{dataset}.log",
    benchmark:
        "logs/benchmarks/paper/qualitative_{dataset}.tsv"
    conda:
        CONDA_ENV
    shell:
        "{VB} figures qualitative --summary {input.summary} --results results --config-json {params.cfg:q}"
        " --dataset {wildcards.dataset} --bpv {params.bpv} {params.slice} --out results/plots/{wildcards.dataset}/qualitative"
        " --out-errors results/plots/{wildcards.dataset}/error_maps > {log} 2>&1"
        " || {{ tail -n 3 {log} >&2; exit 1; }}"
