# One cell = dataset x codec x rate point: encode, decode (its own job, reading only the
# compressed file), score.


rule encode:
    input:
        vol="results/data/{dataset}/volume.tif",
        meta="results/data/{dataset}/meta.json",
    output:
        directory("results/encoded/{dataset}/{codec}/{point}"),
    params:
        codec_type=lambda w: codec_entry(w.codec).get("codec", w.codec),
        module=lambda w: ("--module " + shlex.quote(codec_entry(w.codec)["module"])) if codec_entry(w.codec).get("module") else "",
        params=lambda w: json.dumps(rate_points(w.codec)[w.point], sort_keys=True),
        device=lambda w: codec_device(w.codec),
        tolerance=config.get("target_bpp_tolerance", 0.05),
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
        "{VB} encode --volume {input.vol} --meta {input.meta} --codec-type {params.codec_type}"
        " {params.module} --params {params.params:q} --seed {SEED} --threads {threads}"
        " --device {params.device} --tolerance {params.tolerance} --out-dir {output} > {log} 2>&1"
        " || {{ tail -n 3 {log} >&2; exit 1; }}"


rule decode:
    input:
        "results/encoded/{dataset}/{codec}/{point}",
    output:
        directory("results/decoded/{dataset}/{codec}/{point}"),
    params:
        device=lambda w: codec_device(w.codec),
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
        "{VB} decode --input {input}/volume.vbc --device {params.device} --out-dir {output} > {log} 2>&1"
        " || {{ tail -n 3 {log} >&2; exit 1; }}"


rule score:
    input:
        orig="results/data/{dataset}/volume.tif",
        meta="results/data/{dataset}/meta.json",
        enc="results/encoded/{dataset}/{codec}/{point}",
        dec="results/decoded/{dataset}/{codec}/{point}",
    output:
        "results/metrics/{dataset}/{codec}/{point}/metrics.json",
    params:
        cell=lambda w: json.dumps({"dataset": w.dataset, "codec": w.codec, "point": w.point,
                                   "codec_type": codec_entry(w.codec).get("codec", w.codec)}),
        lpips=json.dumps(config.get("metrics", {}).get("lpips", {})),
        fg=config.get("metrics", {}).get("foreground_threshold", 0.01),
    log:
        "logs/score/{dataset}/{codec}/{point}.log",
    benchmark:
        "logs/benchmarks/score/{dataset}/{codec}/{point}.tsv"
    conda:
        CONDA_ENV
    shell:
        "{VB} score --original {input.orig} --meta {input.meta} --encoded-dir {input.enc}"
        " --decoded-dir {input.dec} --cell {params.cell:q} --lpips {params.lpips:q}"
        " --foreground-threshold {params.fg} --out {output} > {log} 2>&1"
        " || {{ tail -n 3 {log} >&2; exit 1; }}"
