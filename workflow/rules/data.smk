# Datasets: download (url entries), then the canonical volume of every dataset.


rule fetch:
    output:
        "resources/downloads/{dataset}/{file}",
    params:
        vb=VB,
        entry=lambda w: json.dumps(config["datasets"][w.dataset]),
    retries: 1
    log:
        "logs/fetch/{dataset}/{file}.log",
    benchmark:
        "logs/benchmarks/fetch/{dataset}/{file}.tsv"
    conda:
        CONDA_ENV
    shell:
        vb_shell("fetch --name {wildcards.dataset} --entry {params.entry:q} --out {output}")


# the source file (a download or a `path:`) is the rule's input; synthetic datasets have none
rule prepare:
    input:
        source_input,
    output:
        vol="results/data/{dataset}/volume.tif",
        meta="results/data/{dataset}/meta.json",
    params:
        vb=VB,
        entry=lambda w: json.dumps(config["datasets"][w.dataset]),
        source=source_arg,
    log:
        "logs/prepare/{dataset}.log",
    benchmark:
        "logs/benchmarks/prepare/{dataset}.tsv"
    conda:
        CONDA_ENV
    shell:
        vb_shell(
            "prepare --name {wildcards.dataset} --entry {params.entry:q} {params.source}"
            " --out-dir results/data/{wildcards.dataset}"
        )


# a `path:` dataset whose file is missing (MANUAL_SOURCES, common.smk): the job that would make
# it stops with the dataset's instructions
if MANUAL_SOURCES:

    localrules:
        manual_dataset,

    rule manual_dataset:
        output:
            "{manual_source}",
        wildcard_constraints:
            manual_source="|".join(re.escape(p) for p in sorted(MANUAL_SOURCES)),
        params:
            msg=manual_source_message,
        shell:
            "echo {params.msg:q} >&2; exit 1"
