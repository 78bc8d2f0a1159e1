# The summary table, the per-dataset rate-distortion plots, and the environment record.


rule summary:
    input:
        cell_paths("metrics"),
    output:
        csv=report("results/tables/summary.csv", caption="../report/summary.rst", category="Summary"),
        md="results/tables/summary.md",
    log:
        "logs/summary.log",
    benchmark:
        "logs/benchmarks/summary.tsv"
    conda:
        CONDA_ENV
    shell:
        "{VB} summarize --out-csv {output.csv} --out-md {output.md} {input} > {log} 2>&1"
        " || {{ tail -n 3 {log} >&2; exit 1; }}"


rule plot_rd:
    input:
        "results/tables/summary.csv",
    output:
        report("results/plots/{dataset}/rd.png", caption="../report/rd.rst", category="Rate-distortion",
               subcategory="{dataset}"),
    log:
        "logs/plot_rd/{dataset}.log",
    benchmark:
        "logs/benchmarks/plot_rd/{dataset}.tsv"
    conda:
        CONDA_ENV
    shell:
        "{VB} plot-rd --summary {input} --dataset {wildcards.dataset} --out {output} > {log} 2>&1"
        " || {{ tail -n 3 {log} >&2; exit 1; }}"


rule environment:
    output:
        report("results/tables/environment.json", caption="../report/environment.rst", category="Environment"),
    params:
        codecs=json.dumps({c: codec_entry(c).get("codec", c) for c in CODECS}),
    log:
        "logs/environment.log",
    benchmark:
        "logs/benchmarks/environment.tsv"
    conda:
        CONDA_ENV
    shell:
        "{VB} environment --codecs {params.codecs:q} --out {output} > {log} 2>&1"
        " || {{ tail -n 3 {log} >&2; exit 1; }}"
