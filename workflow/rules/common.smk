# Helpers shared by the rules: config access, cell enumeration, the volbench command.
import json
import os
import re
import shlex

sys_path_volbench = os.path.join(workflow.basedir, "workflow")
if sys_path_volbench not in sys.path:
    sys.path.insert(0, sys_path_volbench)

from volbench.config import check_config, point_label, codec_gpu  # noqa: E402

check_config(config)

# The volbench command line, runnable in any environment that has the dependencies
# (the setup script's virtual environment, or the conda environment of envs/volbench.yaml).
VB = "PYTHONPATH={}${{PYTHONPATH:+:$PYTHONPATH}} python -m volbench.cli".format(shlex.quote(sys_path_volbench))
CONDA_ENV = "../../envs/volbench.yaml"

DATASETS = list(config["datasets"])
CODECS = list(config["codecs"])
SEED = int(config.get("seed", 0))
DEVICE = str(config.get("device", "auto"))


def codec_entry(codec):
    return config["codecs"][codec]


def rate_points(codec):
    """{label: parameters} of a codec instance, common params merged in."""
    entry = codec_entry(codec)
    common = entry.get("params", {}) or {}
    out = {}
    for rp in entry["rate_points"]:
        rp = dict(rp)
        label = point_label(rp)
        rp.pop("label", None)
        out[label] = {**common, **rp}
    return out


CELLS = [(d, c, p) for d in DATASETS for c in CODECS for p in rate_points(c)]

wildcard_constraints:
    dataset="[A-Za-z0-9_-]+",
    codec="[A-Za-z0-9_-]+",
    point="[A-Za-z0-9._-]+",


def cell_paths(kind):
    """Paths of every cell for kind in encoded / decoded / metrics."""
    if kind == "metrics":
        return [f"results/metrics/{d}/{c}/{p}/metrics.json" for d, c, p in CELLS]
    return [f"results/{kind}/{d}/{c}/{p}" for d, c, p in CELLS]


def codec_device(codec):
    return str(codec_entry(codec).get("device", DEVICE))


def cell_gpu(wildcards):
    return codec_gpu(codec_entry(wildcards.codec), wildcards.codec, codec_device(wildcards.codec))


# How GPU jobs ask SLURM for their GPU: "gpus" (--gpus=1, the executor plugin's `gpu`
# resource; also what serialises GPU jobs locally) or "gres" (--gres=gpu:1, for clusters that
# schedule GPUs as generic resources). See docs/cluster.md.
GPU_REQUEST = str(config.get("gpu_request", "gpus"))


def cell_gpus(wildcards):
    return 0 if GPU_REQUEST == "gres" else cell_gpu(wildcards)


def cell_gres(wildcards):
    n = cell_gpu(wildcards)
    return f"gpu:{n}" if GPU_REQUEST == "gres" and n else ""


def source_input(wildcards):
    entry = config["datasets"][wildcards.dataset]
    if "url" in entry:
        return [download_path(wildcards.dataset)]
    if "path" in entry:
        return [entry["path"]]
    return []


def download_path(dataset):
    entry = config["datasets"][dataset]
    name = os.path.basename((entry.get("member") or entry["url"]).rstrip("/").split("?")[0]) or "download"
    return f"resources/downloads/{dataset}/{name}"


def core_targets():
    targets = ["results/tables/summary.csv", "results/tables/summary.md", "results/tables/environment.json"]
    targets += [f"results/plots/{d}/rd.png" for d in DATASETS]
    return targets


def all_targets():
    targets = core_targets()
    if "paper_targets" in globals():
        targets += paper_targets()
    return targets
