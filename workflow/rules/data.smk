# Datasets: download (url entries), then the canonical volume of every dataset.


rule fetch:
    output:
        "resources/downloads/{dataset}/{file}",
    params:
        entry=lambda w: json.dumps(config["datasets"][w.dataset]),
    retries: 1
    log:
        "logs/fetch/{dataset}/{file}.log",
    benchmark:
        "logs/benchmarks/fetch/{dataset}/{file}.tsv"
    conda:
        CONDA_ENV
    shell:
        "{VB} fetch --name {wildcards.dataset} --entry {params.entry:q} --out {output} > {log} 2>&1"
        " || {{ tail -n 3 {log} >&2; exit 1; }}"


rule prepare:
    input:
        source_input,
    output:
        vol="results/data/{dataset}/volume.tif",
        meta="results/data/{dataset}/meta.json",
    params:
        entry=lambda w: json.dumps(config["datasets"][w.dataset]),
        source=lambda w, input: f"--source {shlex.quote(str(input[0]))}" if "url" in config["datasets"][w.dataset] else "",
    log:
        "logs/prepare/{dataset}.log",
    benchmark:
        "logs/benchmarks/prepare/{dataset}.tsv"
    conda:
        CONDA_ENV
    shell:
        "{VB} prepare --name {wildcards.dataset} --entry {params.entry:q} {params.source}"
        " --out-dir results/data/{wildcards.dataset} > {log} 2>&1"
        " || {{ tail -n 3 {log} >&2; exit 1; }}"
