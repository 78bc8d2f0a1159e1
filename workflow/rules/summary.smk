# The summary table, the per-dataset rate-distortion plots, and the environment record.


rule summary:
    input:
        cell_paths("metrics"),
    output:
        csv=report("results/tables/summary.csv", caption="../report/summary_csv.rst",
                   category=REPORT_CATEGORIES["summary"], labels={"table": "summary.csv (download, full precision)"}),
        md="results/tables/summary.md",
    params:
        vb=VB,
    log:
        "logs/summary.log",
    benchmark:
        "logs/benchmarks/summary.tsv"
    conda:
        CONDA_ENV
    shell:
        # a missed target_bpp is also one warning line on the console
        vb_shell("summarize --out-csv {output.csv} --out-md {output.md} {input}")
        + "; grep -h '^volbench: warning:' {log} >&2 || true"


# the summary as a table a person reads, in the report (volbench.paper.summary_table)
rule summary_html:
    input:
        summary="results/tables/summary.csv",
        cfg=PAPER_CFG_FILE,
    output:
        report("results/tables/summary.html", caption="../report/summary.rst", category=REPORT_CATEGORIES["summary"],
               labels={"table": "Summary: every dataset x codec x rate point"}),
    params:
        vb=VB,
    log:
        "logs/summary_html.log",
    benchmark:
        "logs/benchmarks/summary_html.tsv"
    conda:
        CONDA_ENV
    shell:
        vb_shell("summary-html --summary {input.summary} --config-json {input.cfg} --out {output}")


rule plot_rd:
    input:
        "results/tables/summary.csv",
    output:
        report("results/plots/{dataset}/rd.png", caption="../report/rd.rst", category=REPORT_CATEGORIES["rd"],
               subcategory="{dataset}", labels=lambda w: rd_labels("rd", w.dataset)),
    params:
        vb=VB,
    log:
        "logs/plot_rd/{dataset}.log",
    benchmark:
        "logs/benchmarks/plot_rd/{dataset}.tsv"
    conda:
        CONDA_ENV
    shell:
        vb_shell("plot-rd --summary {input} --dataset {wildcards.dataset} --out {output}")


rule environment:
    output:
        # in the report as results/tables/paper/environment.html (rule paper_environment)
        "results/tables/environment.json",
    params:
        vb=VB,
        codecs=json.dumps({c: codec_type(c) for c in CODECS}),
    log:
        "logs/environment.log",
    benchmark:
        "logs/benchmarks/environment.tsv"
    conda:
        CONDA_ENV
    shell:
        vb_shell("environment --codecs {params.codecs:q} --out {output}")
