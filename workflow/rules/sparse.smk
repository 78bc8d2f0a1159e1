# Sparse-slice reconstruction (seed 004 Table 1; docs/sparse-slices.md): per dataset and fraction
# of `sparse_slices:`, a seeded split of the axial slices; each method fitted on the training
# slices alone (its job's only input is the training file, never the volume); the held-out slices
# scored; a table and a figure. Checks, cells, paths and targets: volbench/sparse/plan.py.
from volbench.sparse import plan as sparse_plan

sparse_plan.check(config)

SPARSE_SEED = sparse_plan.split_seed(config)
SPARSE_LPIPS = json.dumps(config.get("metrics", {}).get("lpips", {}))
# the report's section: after the paper's sections where common.smk numbers them
SPARSE_CATEGORY = globals().get("REPORT_CATEGORIES", {}).get("sparse") or (
    "8. Sparse slices" if "REPORT_CATEGORIES" in globals() else "Sparse slices")
# seed 004's published values, shown beside ours where present (volbench/paper/published.py)
SPARSE_PUBLISHED = [
    p for p in [os.path.join(sys_path_volbench, "volbench", "paper", "published.csv")] if os.path.exists(p)
]
# common.smk's reader of the params Snakemake stored (the codec cells' redo mechanism), if any
SPARSE_STORED = globals().get("_stored_params")


wildcard_constraints:
    fraction="[0-9]+(\.[0-9]+)?(e-?[0-9]+)?",
    method="[A-Za-z0-9_-]+",


rule sparse_split:
    input:
        vol="results/data/{dataset}/volume.tif",
        meta="results/data/{dataset}/meta.json",
        labels=lambda w: sparse_plan.labels_input(config, w.dataset),
    output:
        tif="results/sparse/{dataset}/{fraction}/input/train.tif",
        json="results/sparse/{dataset}/{fraction}/input/train.json",
        labels="results/sparse/{dataset}/{fraction}/input/train_labels.npz",
    params:
        vb=VB,
        seed=SPARSE_SEED,
        out=lambda w, output: os.path.dirname(output.json),
        labels=lambda w: sparse_plan.labels_arg(config, w.dataset),
    log:
        "logs/sparse/split/{dataset}/{fraction}.log",
    benchmark:
        "logs/benchmarks/sparse/split/{dataset}/{fraction}.tsv"
    conda:
        CONDA_ENV
    shell:
        vb_shell(
            "sparse-split --volume {input.vol} --meta {input.meta} --dataset {wildcards.dataset}"
            " --fraction {wildcards.fraction} --seed {params.seed} --out-dir {params.out} {params.labels}"
        )


# the held-out discipline: the training file is this job's only input (tests/test_sparse_workflow.py)
rule sparse_fit:
    input:
        tif="results/sparse/{dataset}/{fraction}/input/train.tif",
        json="results/sparse/{dataset}/{fraction}/input/train.json",
        labels="results/sparse/{dataset}/{fraction}/input/train_labels.npz",
    output:
        directory("results/sparse/{dataset}/{fraction}/methods/{method}"),
    params:
        vb=VB,
        train=lambda w, input: os.path.dirname(input.json),
        type=lambda w: sparse_plan.method_type(config, w.method),
        module=lambda w: sparse_plan.module_arg(config, w.method),
        params=lambda w: json.dumps(sparse_plan.method_params(config, w.method), sort_keys=True),
        seed=SEED,
        device=lambda w: sparse_plan.method_device(config, w.method),
        # a failed fit is redone by the next run (plan.redo, plan.fit_broken)
        redo=lambda w: sparse_plan.redo(
            SPARSE_STORED,
            sparse_plan.method_dir(w.dataset, w.fraction, w.method),
            sparse_plan.fit_broken(sparse_plan.method_dir(w.dataset, w.fraction, w.method)),
        ),
    resources:
        gpu=lambda w: sparse_plan.gpu_resources(config, w.method, GPU_REQUEST)[0],
        gres=lambda w: sparse_plan.gpu_resources(config, w.method, GPU_REQUEST)[1],
    log:
        "logs/sparse/fit/{dataset}/{fraction}/{method}.log",
    benchmark:
        "logs/benchmarks/sparse/fit/{dataset}/{fraction}/{method}.tsv"
    conda:
        CONDA_ENV
    shell:
        vb_shell(
            "sparse-fit --train-dir {params.train} --method-type {params.type} {params.module}"
            " --name {wildcards.method} --params {params.params:q} --seed {params.seed}"
            " --device {params.device} --threads {threads} --out-dir {output}"
        )


# one job per dataset (torch and the LPIPS network load once); the only job that reads test slices
rule sparse_score:
    input:
        vol="results/data/{dataset}/volume.tif",
        labels=lambda w: sparse_plan.labels_input(config, w.dataset),
        splits=lambda w: [sparse_plan.split_file(w.dataset, f) for f in sparse_plan.fraction_labels(config)],
        methods=lambda w: sparse_plan.method_dirs(config, w.dataset),
    output:
        [sparse_plan.SCORES.format(dataset="{dataset}", fraction=f) for f in sparse_plan.fraction_labels(config)],
    params:
        vb=VB,
        splits=lambda w: sparse_plan.score_splits_arg(config, w.dataset),
        lpips=SPARSE_LPIPS,
        labels=lambda w: sparse_plan.labels_arg(config, w.dataset),
        # redone when a method folder was deleted or failed after scoring (plan.scores_broken)
        redo=lambda w: sparse_plan.redo(
            SPARSE_STORED, sparse_plan.scores(config, w.dataset)[0], sparse_plan.scores_broken(config, w.dataset)
        ),
    log:
        "logs/sparse/score/{dataset}.log",
    benchmark:
        "logs/benchmarks/sparse/score/{dataset}.tsv"
    conda:
        CONDA_ENV
    shell:
        vb_shell("sparse-score --volume {input.vol} --splits {params.splits:q} --lpips {params.lpips:q} {params.labels}")


rule sparse_table:
    input:
        scores=sparse_plan.scores(config),
        published=SPARSE_PUBLISHED,
    output:
        csv="results/tables/sparse/sparse_table1.csv",
        md="results/tables/sparse/sparse_table1.md",
        html=report(
            "results/tables/sparse/sparse_table1.html",
            caption="../report/sparse_table.rst",
            category=SPARSE_CATEGORY,
            labels={"table": "Sparse slices (seed 004 Table 1)", "shows": "SSIM, PSNR, LPIPS of held-out slices"},
        ),
    params:
        vb=VB,
    log:
        "logs/sparse/table.log",
    benchmark:
        "logs/benchmarks/sparse/table.tsv"
    conda:
        CONDA_ENV
    shell:
        vb_shell("sparse-table --out-base results/tables/sparse/sparse_table1 {input.scores}")


# seed 004 Tables 2-3: per axis, with semantics, for the methods that render any axis
rule sparse_table_axes:
    input:
        scores=sparse_plan.scores(config),
        published=SPARSE_PUBLISHED,
    output:
        csv="results/tables/sparse/sparse_table23_axes.csv",
        md="results/tables/sparse/sparse_table23_axes.md",
        html=report(
            "results/tables/sparse/sparse_table23_axes.html",
            caption="../report/sparse_table_axes.rst",
            category=SPARSE_CATEGORY,
            labels={"table": "Sparse slices per axis (seed 004 Tables 2-3)",
                    "shows": "PSNR, SSIM, semantic loss per axis; Dice per class"},
        ),
    params:
        vb=VB,
    log:
        "logs/sparse/table_axes.log",
    benchmark:
        "logs/benchmarks/sparse/table_axes.tsv"
    conda:
        CONDA_ENV
    shell:
        vb_shell("sparse-table-axes --out-base results/tables/sparse/sparse_table23_axes {input.scores}")


rule sparse_figure:
    input:
        vol="results/data/{dataset}/volume.tif",
        labels=lambda w: sparse_plan.labels_input(config, w.dataset),
        scores=lambda w: sparse_plan.scores(config, w.dataset),
        methods=lambda w: sparse_plan.method_dirs(config, w.dataset),
    output:
        png=report(
            "results/plots/{dataset}/sparse_heldout.png",
            caption="../report/sparse_heldout.rst",
            category=SPARSE_CATEGORY,
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "held-out slices per fraction"},
        ),
        pdf="results/plots/{dataset}/sparse_heldout.pdf",
    params:
        vb=VB,
        methods=lambda w: sparse_plan.figure_methods_arg(config, w.dataset),
        labels=lambda w: sparse_plan.labels_arg(config, w.dataset),
    log:
        "logs/sparse/figure/{dataset}.log",
    benchmark:
        "logs/benchmarks/sparse/figure/{dataset}.tsv"
    conda:
        CONDA_ENV
    shell:
        vb_shell(
            "sparse-figure --volume {input.vol} --methods {params.methods:q} {params.labels}"
            " --out-base results/plots/{wildcards.dataset}/sparse_heldout {input.scores}"
        )


rule sparse_training_figure:
    input:
        scores=lambda w: sparse_plan.scores(config, w.dataset),
        methods=lambda w: sparse_plan.method_dirs(config, w.dataset),
    output:
        png=report(
            "results/plots/{dataset}/sparse_training.png",
            caption="../report/sparse_training.rst",
            category=SPARSE_CATEGORY,
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "training curves vs held-out PSNR"},
        ),
        pdf="results/plots/{dataset}/sparse_training.pdf",
    params:
        vb=VB,
        methods=lambda w: sparse_plan.figure_methods_arg(config, w.dataset),
    log:
        "logs/sparse/training_figure/{dataset}.log",
    benchmark:
        "logs/benchmarks/sparse/training_figure/{dataset}.tsv"
    conda:
        CONDA_ENV
    shell:
        vb_shell(
            "sparse-training-figure --methods {params.methods:q}"
            " --out-base results/plots/{wildcards.dataset}/sparse_training {input.scores}"
        )
