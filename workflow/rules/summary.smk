# The summary table, the per-dataset rate-distortion plots, and the environment record.


rule summary:
    input:
        cell_paths("metrics"),
    output:
        csv=report("results/tables/summary.csv", caption="../report/summary.rst", category="Summary"),
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
        vb_shell("summarize --out-csv {output.csv} --out-md {output.md} {input}")


rule plot_rd:
    input:
        "results/tables/summary.csv",
    output:
        report("results/plots/{dataset}/rd.png", caption="../report/rd.rst", category="Rate-distortion",
               subcategory="{dataset}"),
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
        report("results/tables/environment.json", caption="../report/environment.rst", category="Environment"),
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
