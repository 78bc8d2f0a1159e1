# One cell = dataset x codec x rate point: encode, decode (its own job, reading only the
# compressed file), score.


rule encode:
    input:
        vol="results/data/{dataset}/volume.tif",
        meta="results/data/{dataset}/meta.json",
    output:
        directory("results/encoded/{dataset}/{codec}/{point}"),
    params:
        vb=VB,
        codec_type=lambda w: codec_type(w.codec),
        module=module_arg,
        params=lambda w: json.dumps(rate_points(w.codec)[w.point], sort_keys=True),
        seed=SEED,
        device=lambda w: codec_device(w.codec),
        tolerance=config.get("target_bpp_tolerance", 0.05),
        # a failed or deleted cell is redone by the next run (common.smk, cell_redo)
        redo=cell_redo("encode"),
    resources:
        gpu=cell_gpus,
        gres=cell_gres,
    log:
        "logs/encode/{dataset}/{codec}/{point}.log",
    benchmark:
        "logs/benchmarks/encode/{dataset}/{codec}/{point}.tsv"
    conda:
        CONDA_ENV
    shell:
        vb_shell(
            "encode --volume {input.vol} --meta {input.meta} --codec-type {params.codec_type}"
            " {params.module} --params {params.params:q} --seed {params.seed} --threads {threads}"
            " --device {params.device} --tolerance {params.tolerance} --out-dir {output}"
        )


rule decode:
    input:
        "results/encoded/{dataset}/{codec}/{point}",
    output:
        directory("results/decoded/{dataset}/{codec}/{point}"),
    params:
        vb=VB,
        device=lambda w: codec_device(w.codec),
        # the codec module the config names: the only module the decoder may import (a
        # compressed file never chooses code to run)
        module=module_arg,
        redo=cell_redo("decode"),
    resources:
        gpu=cell_gpus,
        gres=cell_gres,
    log:
        "logs/decode/{dataset}/{codec}/{point}.log",
    benchmark:
        "logs/benchmarks/decode/{dataset}/{codec}/{point}.tsv"
    conda:
        CONDA_ENV
    shell:
        vb_shell("decode --input {input}/volume.vbc {params.module} --device {params.device} --out-dir {output}")


rule score:
    input:
        orig="results/data/{dataset}/volume.tif",
        meta="results/data/{dataset}/meta.json",
        enc="results/encoded/{dataset}/{codec}/{point}",
        dec="results/decoded/{dataset}/{codec}/{point}",
    output:
        "results/metrics/{dataset}/{codec}/{point}/metrics.json",
    params:
        vb=VB,
        cell=lambda w: json.dumps(score_cell_arg(w)),
        lpips=json.dumps(config.get("metrics", {}).get("lpips", {})),
        fg=config.get("metrics", {}).get("foreground_threshold", 0.01),
        redo=cell_redo("score"),
    log:
        "logs/score/{dataset}/{codec}/{point}.log",
    benchmark:
        "logs/benchmarks/score/{dataset}/{codec}/{point}.tsv"
    conda:
        CONDA_ENV
    shell:
        vb_shell(
            "score --original {input.orig} --meta {input.meta} --encoded-dir {input.enc}"
            " --decoded-dir {input.dec} --cell {params.cell:q} --lpips {params.lpips:q}"
            " --foreground-threshold {params.fg} --out {output}"
        )
