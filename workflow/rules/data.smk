# Datasets: download (url entries), then the canonical volume of every dataset, and its labels
# where it has them (volbench.datasets.labels).
from volbench.datasets.labels import fetch_entry, has_labels, label_input, labeled_datasets, labels_path  # noqa: E402,F401
from volbench.datasets.labels import spec as labels_spec  # noqa: E402

# the datasets with labels (synthetic ones unless `labels: false`; file ones that name a label
# file); every `labels:` entry is checked here, before any job runs. Their prepare job is
# prepare_labeled, which also writes results/data/{dataset}/labels.tif; the others' is prepare,
# which writes no labels.tif. A rule that needs a dataset's labels takes
# labels_path(dataset) as input for the datasets where has_labels(config, dataset).
LABELED = labeled_datasets(config)


def _names_regex(names):
    """A wildcard constraint matching exactly these names (none: matches nothing)."""
    return "|".join(re.escape(n) for n in sorted(names)) or "(?!)"


def prepare_source(wildcards):
    """--source of the prepare step: the dataset's own source file, where it has one."""
    return source_arg(wildcards, source_input(wildcards))


rule fetch:
    output:
        "resources/downloads/{dataset}/{file}",
    params:
        vb=VB,
        # the dataset's entry, or for its label download (resources/downloads/{dataset}/labels/...)
        # the label file's url, sha256 and member
        entry=lambda w: json.dumps(fetch_entry(config, w.dataset, w.file)),
    retries: 1
    log:
        "logs/fetch/{dataset}/{file}.log",
    benchmark:
        "logs/benchmarks/fetch/{dataset}/{file}.tsv"
    conda:
        CONDA_ENV
    shell:
        vb_shell("fetch --name {wildcards.dataset} --entry {params.entry:q} --out {output}")


# the source file (a download or a `path:`) is the rule's input; synthetic datasets have none.
# A dataset with labels: prepare_labeled below (its label file, if any, is an input too).
rule prepare:
    input:
        source_input,
    output:
        vol="results/data/{dataset}/volume.tif",
        meta="results/data/{dataset}/meta.json",
    wildcard_constraints:
        dataset=_names_regex(set(DATASETS) - set(LABELED)),
    params:
        vb=VB,
        entry=lambda w: json.dumps(config["datasets"][w.dataset]),
        source=prepare_source,
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


use rule prepare as prepare_labeled with:
    input:
        source_input,
        labels=lambda w: label_input(config, w.dataset),
    output:
        vol="results/data/{dataset}/volume.tif",
        meta="results/data/{dataset}/meta.json",
        labels="results/data/{dataset}/labels.tif",
    wildcard_constraints:
        dataset=_names_regex(LABELED),


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


# a `labels: {path: ...}` file that is missing when the workflow is parsed: as for the volumes
# above, the job that would make it stops with what to do (never a rule that writes a user's file)
MANUAL_LABELS = {
    str(s["path"]): d
    for d in LABELED
    for s in [labels_spec(d, config["datasets"][d])]
    if s["kind"] == "path" and not os.path.exists(str(s["path"])) and str(s["path"]) not in MANUAL_SOURCES
}
if MANUAL_LABELS:

    localrules:
        manual_labels,

    rule manual_labels:
        output:
            "{manual_labels}",
        wildcard_constraints:
            manual_labels="|".join(re.escape(p) for p in sorted(MANUAL_LABELS)),
        params:
            msg=lambda w: (
                f"volbench: error: dataset {MANUAL_LABELS[w.manual_labels]}: label file {w.manual_labels} does not "
                "exist; place it there or fix `labels:` of the dataset in the config"
            ),
        shell:
            "echo {params.msg:q} >&2; exit 1"
