# Paper outputs: the papers' tables, BD-rate against the anchor, and the figures
# (docs/reproduce-papers.md). Everything reads results/tables/summary.csv; the figures that need
# voxels also read results/data and results/decoded, the training plot results/encoded/.../history.csv.
# The targets and options (PAPER_*, paper_targets) are in common.smk. The report's categories and
# labels: volbench/paper/report_labels.py.


localrules:
    paper_config,


# the parts of the config the tables and figures read, as a file (PAPER_CFG_FILE): a changed
# config rewrites it, and what reads it runs again
rule paper_config:
    output:
        PAPER_CFG_FILE,
    params:
        cfg=PAPER_CFG,
    log:
        "logs/paper/config.log",
    run:
        from volbench.io import atomic_write_text

        atomic_write_text(output[0], f"{params.cfg}\n")


rule paper_table:
    input:
        summary="results/tables/summary.csv",
        # the papers' published values shown beside ours (volbench/paper/published.py)
        published=os.path.join(sys_path_volbench, "volbench", "paper", "published.csv"),
        cfg=PAPER_CFG_FILE,
    output:
        csv="results/tables/paper/{table}.csv",
        md="results/tables/paper/{table}.md",
        tex="results/tables/paper/{table}.tex",
        html=report("results/tables/paper/{table}.html", caption="../report/paper_table.rst",
                    category=REPORT_CATEGORIES["tables"], labels=lambda w: table_labels(w.table)),
    params:
        vb=VB,
    log:
        "logs/paper/table_{table}.log",
    benchmark:
        "logs/benchmarks/paper/table_{table}.tsv"
    conda:
        CONDA_ENV
    shell:
        vb_shell(
            "paper-tables --summary {input.summary} --config-json {input.cfg}"
            " --table {wildcards.table} --out results/tables/paper"
        )


rule paper_bdrate:
    input:
        summary="results/tables/summary.csv",
        cfg=PAPER_CFG_FILE,
    output:
        csv="results/tables/paper/bdrate.csv",
        md="results/tables/paper/bdrate.md",
        tex="results/tables/paper/bdrate.tex",
        html=report("results/tables/paper/bdrate.html", caption="../report/bdrate.rst",
                    category=REPORT_CATEGORIES["tables"], labels=table_labels("bdrate")),
    params:
        vb=VB,
        anchor=config.get("anchor", "hevc"),
        bd=PAPER_BD_ARGS,
    log:
        "logs/paper/bdrate.log",
    benchmark:
        "logs/benchmarks/paper/bdrate.tsv"
    conda:
        CONDA_ENV
    shell:
        vb_shell(
            "bdrate --summary {input.summary} --config-json {input.cfg} --anchor {params.anchor:q}"
            " {params.bd} --out results/tables/paper"
        )


rule paper_environment:
    input:
        "results/tables/environment.json",
    output:
        md="results/tables/paper/environment.md",
        html=report("results/tables/paper/environment.html", caption="../report/paper_environment.rst",
                    category=REPORT_CATEGORIES["environment"], labels={"record": "Software and hardware of the run"}),
    params:
        vb=VB,
    log:
        "logs/paper/environment.log",
    conda:
        CONDA_ENV
    shell:
        vb_shell("paper-environment --env-json {input} --out results/tables/paper/environment")


rule paper_rd:
    input:
        summary="results/tables/summary.csv",
        cfg=PAPER_CFG_FILE,
    output:
        [report(f"results/plots/{{dataset}}/rd_{m}.png", caption="../report/paper_rd.rst",
                category=REPORT_CATEGORIES["rd"], subcategory="{dataset}",
                labels=lambda w, m=m: rd_labels(f"rd_{m}", w.dataset)) for m in PAPER_RD_METRICS],
        pdfs=expand("results/plots/{{dataset}}/rd_{m}.pdf", m=PAPER_RD_METRICS),
    params:
        vb=VB,
        metrics=" ".join(PAPER_RD_METRICS),
    log:
        "logs/paper/rd_{dataset}.log",
    benchmark:
        "logs/benchmarks/paper/rd_{dataset}.tsv"
    conda:
        CONDA_ENV
    shell:
        vb_shell(
            "figures rd --summary {input.summary} --config-json {input.cfg} --dataset {wildcards.dataset}"
            " --metrics {params.metrics} --out results/plots/{wildcards.dataset}"
        )


rule paper_bubble:
    input:
        summary="results/tables/summary.csv",
        cfg=PAPER_CFG_FILE,
    output:
        png=report("results/plots/bubble.png", caption="../report/paper_bubble.rst", category=REPORT_CATEGORIES["speed"],
                   labels={"figure": "PSNR - decode speed - encode time (GaussianPile Fig. 1a)"}),
        pdf="results/plots/bubble.pdf",
    params:
        vb=VB,
    log:
        "logs/paper/bubble.log",
    benchmark:
        "logs/benchmarks/paper/bubble.tsv"
    conda:
        CONDA_ENV
    shell:
        vb_shell("figures bubble --summary {input.summary} --config-json {input.cfg} --out results/plots/bubble")


rule paper_training:
    input:
        summary="results/tables/summary.csv",
        cells=lambda w: paper_training_cells(w.dataset),
        cfg=PAPER_CFG_FILE,
    output:
        png=report("results/plots/{dataset}/training_dynamics.png", caption="../report/paper_training.rst",
                   category=REPORT_CATEGORIES["training"],
                   labels={"dataset": "{dataset}", "figure": "training dynamics (VolMicro Fig. 1)"}),
        pdf="results/plots/{dataset}/training_dynamics.pdf",
    params:
        vb=VB,
    log:
        "logs/paper/training_{dataset}.log",
    benchmark:
        "logs/benchmarks/paper/training_{dataset}.tsv"
    conda:
        CONDA_ENV
    shell:
        vb_shell(
            "figures training --summary {input.summary} --results results --config-json {input.cfg}"
            " --dataset {wildcards.dataset}"
            " --out results/plots/{wildcards.dataset}/training_dynamics"
        )


rule paper_qualitative:
    input:
        summary="results/tables/summary.csv",
        orig="results/data/{dataset}/volume.tif",
        decoded=lambda w: paper_decoded_cells(w.dataset),
        cfg=PAPER_CFG_FILE,
    output:
        png=report("results/plots/{dataset}/qualitative.png", caption="../report/paper_qualitative.rst",
                   category=REPORT_CATEGORIES["qualitative"],
                   labels={"dataset": "{dataset}", "figure": "slices and MIP"}),
        pdf="results/plots/{dataset}/qualitative.pdf",
        err=report("results/plots/{dataset}/error_maps.png", caption="../report/paper_error_maps.rst",
                   category=REPORT_CATEGORIES["qualitative"],
                   labels={"dataset": "{dataset}", "figure": "error maps"}),
        err_pdf="results/plots/{dataset}/error_maps.pdf",
    params:
        vb=VB,
        bpv=PAPER_MATCHED_BPP,
        slice=paper_slice,
    log:
        "logs/paper/qualitative_{dataset}.log",
    benchmark:
        "logs/benchmarks/paper/qualitative_{dataset}.tsv"
    conda:
        CONDA_ENV
    shell:
        vb_shell(
            "figures qualitative --summary {input.summary} --results results --config-json {input.cfg}"
            " --dataset {wildcards.dataset} --bpv {params.bpv} {params.slice} --out results/plots/{wildcards.dataset}/qualitative"
            " --out-errors results/plots/{wildcards.dataset}/error_maps"
        )
