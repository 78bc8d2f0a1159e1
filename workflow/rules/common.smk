# Helpers shared by the rules: the config (validated here), cell enumeration, the volbench
# command of every rule, the targets. The rule files hold rules only.
import base64
import json
import os
import posixpath
import re
import shlex

from jsonschema.exceptions import ValidationError
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

sys_path_volbench = os.path.join(workflow.basedir, "workflow")
if sys_path_volbench not in sys.path:
    sys.path.insert(0, sys_path_volbench)

from volbench.cellstate import broken as cell_broken, redo_param  # noqa: E402
from volbench.codecs.base import get_codec  # noqa: E402
from volbench.config import check_config, check_sections, point_label, codec_gpu, schema_error  # noqa: E402
from volbench.errors import VolbenchError  # noqa: E402
from volbench.paper.tables import GENERATORS as _PAPER_GENERATORS  # noqa: E402
from volbench.paper.report_labels import CATEGORIES as REPORT_CATEGORIES, rd_labels, table_labels  # noqa: E402

# The config is checked before any job runs: first that it has its experiment (a --configfile
# replaces the embedded default, nothing of the default is merged in), then against the JSON schema
# (which also fills in its defaults), then by check_config. A mistake stops here with one line
# naming the key.
check_sections(config, CONFIGFILES)
try:
    validate(config, schema="../schemas/config.schema.yaml")
except WorkflowError as exc:
    if not isinstance(exc.__context__, ValidationError):
        raise
    raise VolbenchError(schema_error(exc.__context__)) from None

check_config(config)

# The volbench command line, runnable in any environment that has the dependencies (the setup
# script's virtual environment, or the conda environment of envs/volbench.yaml). Every rule
# receives it as params.vb.
VB = "PYTHONPATH={}${{PYTHONPATH:+:$PYTHONPATH}} python -m volbench.cli".format(shlex.quote(sys_path_volbench))
CONDA_ENV = "../../envs/volbench.yaml"


# what follows every volbench command: its output goes into the job's log, and a failure shows
# the log's last lines on stderr
TO_LOG = "> {log} 2>&1 || {{ tail -n 3 {log} >&2; exit 1; }}"


def vb_shell(args):
    """The shell command that runs `volbench ARGS` (the command line is params.vb) into the log."""
    return " ".join(["{params.vb}", args, TO_LOG])


DATASETS = list(config["datasets"])
CODECS = list(config["codecs"])
SEED = int(config.get("seed", 0))
DEVICE = str(config.get("device", "auto"))


def codec_entry(codec):
    return config["codecs"][codec]


def codec_type(codec):
    """The codec type of a codec instance: its `codec:`, else the instance's own name."""
    return codec_entry(codec).get("codec", codec)


def module_arg(wildcards):
    """--module of a codec instance whose type lives in a module of its own, else nothing."""
    own = codec_entry(wildcards.codec).get("module")
    return f"--module {shlex.quote(own)}" if own else ""


def score_cell_arg(wildcards):
    """The cell a score job describes: dataset, instance, rate point, codec type, and the
    module of a codec type that lives in a module of its own."""
    cell = {"dataset": wildcards.dataset, "codec": wildcards.codec, "point": wildcards.point,
            "codec_type": codec_type(wildcards.codec)}
    own = codec_entry(wildcards.codec).get("module")
    if own:
        cell["module"] = own
    # seed 001's protocol (metrics.protocol_001) on the cells the VolMicro tables compare: those
    # whose rate point targets one of the matched bit rates
    p001 = config.get("metrics", {}).get("protocol_001", {})
    target = rate_points(wildcards.codec).get(wildcards.point, {}).get("target_bpp")
    if p001.get("enabled", True) and target is not None and any(
            abs(float(target) - float(m)) <= 1e-9 for m in config.get("matched_bpp") or []):
        cell["protocol_001"] = {"seed": int(p001.get("seed", 0)), "lpips": bool(p001.get("lpips", True))}
    return cell


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


# -- redoing failed and deleted cells (volbench.cellstate) ----------------------------------------
def _stored_params(path):
    """The params Snakemake stored for output `path` when its job last ran (None: unknown)."""
    try:
        from snakemake.io import IOFile

        stored = workflow.persistence.params(IOFile(path))
        if stored is not None:
            return stored
    except Exception:  # another Snakemake version: read its file records (.snakemake/metadata)
        pass
    try:
        b64 = base64.urlsafe_b64encode(path.encode()).decode()
        parts = [b64[i : i + 254] for i in range(0, len(b64), 254)]
        rec = os.path.join(".snakemake", "metadata", *[f"@{s}" for s in parts[:-1]], parts[-1])
        with open(rec) as fh:
            return json.load(fh).get("params")
    except (OSError, ValueError, AttributeError):
        return None


def cell_redo(step):
    """The `redo` param of a cell's encode, decode or score job: changes when the cell is broken
    (an encode or decode failed, or a folder of it was deleted), so that a plain rerun redoes the
    cell through Snakemake's params rerun trigger; stable otherwise (volbench.cellstate)."""

    def param(wildcards):
        d, c, p = wildcards.dataset, wildcards.codec, wildcards.point
        out = {"encode": f"results/encoded/{d}/{c}/{p}", "decode": f"results/decoded/{d}/{c}/{p}",
               "score": f"results/metrics/{d}/{c}/{p}/metrics.json"}[step]
        return redo_param(_stored_params(out), cell_broken("results", d, c, p, step))

    return param

wildcard_constraints:
    dataset="[A-Za-z0-9_-]+",
    codec="[A-Za-z0-9_-]+",
    point="[A-Za-z0-9._-]+",
    table="|".join(_PAPER_GENERATORS),


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


# -- datasets ------------------------------------------------------------------------------------
def source_input(wildcards):
    """The source file of a dataset: its download (url), its file (path), none (synthetic)."""
    entry = config["datasets"][wildcards.dataset]
    if "url" in entry:
        return [download_path(wildcards.dataset)]
    if "path" in entry:
        return [entry["path"]]
    return []


def source_arg(wildcards, input):
    """--source of the prepare step: its input file (a download or a `path:`), where it has one."""
    return f"--source {shlex.quote(str(input[0]))}" if input else ""


def download_path(dataset):
    entry = config["datasets"][dataset]
    # the file's name: the last part of the member, else of the url (without its query)
    name = posixpath.basename((entry.get("member") or entry["url"]).rstrip(posixpath.sep).split("?")[0])
    return f"resources/downloads/{dataset}/{name or 'download'}"


# Datasets given by `path:` (behind a registration page, or without a published checksum): a
# missing file is not a planning error. `snakemake -n` plans the whole run; the job that would
# "make" a missing file stops with the dataset's `instructions:` (where to get it, how to convert
# it). Only files missing when the workflow is parsed get this rule: an existing file is a plain
# source file, so no rule (and no --forceall) can ever delete or replace a user's data.
MANUAL_SOURCES = {
    str(e["path"]): (d, str(e.get("instructions", "")))
    for d, e in config["datasets"].items()
    if isinstance(e, dict) and e.get("path") and not os.path.exists(str(e["path"]))
}


def manual_source_message(wildcards):
    dataset, instructions = MANUAL_SOURCES[wildcards.manual_source]
    return "volbench: error: dataset {d}: {p} does not exist; get the file by hand and place it there ({i})".format(
        d=dataset, p=wildcards.manual_source, i=instructions or "see the comment above its entry in the config")


# -- paper outputs (workflow/rules/paper.smk, docs/reproduce-papers.md) ---------------------------
PAPER_TABLES = list(_PAPER_GENERATORS)
# `paper:` options of the config, checked by the schema (docs/reproduce-papers.md, "Options")
PAPER_OPTS = dict(config.get("paper") or {})
PAPER_RD_METRICS = list(PAPER_OPTS.get("rd_metrics") or ["psnr_2d", "psnr_3d", "ssim_3d", "lpips"])
PAPER_BD_ARGS = "--method {} --min-points {} --min-overlap {}".format(
    PAPER_OPTS.get("bd_method", "pchip"), int(PAPER_OPTS.get("bd_min_points", 4)),
    float(PAPER_OPTS.get("bd_min_overlap", 0.75)))
# the parts of the config the paper outputs use (dataset modality, codec order/types, anchor, matched_bpp)
PAPER_CFG = json.dumps(
    {k: config[k] for k in ("datasets", "codecs", "anchor", "matched_bpp", "paper") if k in config},
)  # not sort_keys: the config's order of datasets, codecs and rate points is the tables' order
# ... written to a file (rule paper_config) that the table and figure rules read, so that the
# report's job parameters are not a JSON dump of the config; a changed config rewrites it
PAPER_CFG_FILE = "results/tables/paper/config.json"
PAPER_MATCHED_BPP = float(PAPER_OPTS.get("qualitative_bpv") or (config.get("matched_bpp") or [0.073])[0])


def paper_slice(wildcards):
    """--slice of the qualitative figure: paper.qualitative_slice, one index or {dataset: index}."""
    z = PAPER_OPTS.get("qualitative_slice")
    if isinstance(z, dict):
        z = z.get(wildcards.dataset)
    return "" if z is None else f"--slice {int(z)}"


_TRAINS = {}


def codec_trains(codec):
    """Whether a codec instance's codec trains (Codec.trains: it writes a history.csv). A codec that
    cannot be loaded here (its libraries only in the jobs' environment) counts as training: the
    training figure is then planned, and says so when no history.csv came."""
    if codec not in _TRAINS:
        try:
            _TRAINS[codec] = bool(get_codec(codec_type(codec), codec_entry(codec).get("module")).trains)
        except Exception:
            _TRAINS[codec] = True
    return _TRAINS[codec]


def paper_training_cells(dataset):
    return [f"results/encoded/{d}/{c}/{p}" for d, c, p in CELLS if d == dataset and codec_trains(c)]


def paper_training_datasets():
    return [d for d in DATASETS if paper_training_cells(d)]


def paper_decoded_cells(dataset):
    return [f"results/decoded/{d}/{c}/{p}" for d, c, p in CELLS if d == dataset]


def paper_targets():
    """Every final output of the paper rules."""
    t = []
    for name in PAPER_TABLES:
        t += [f"results/tables/paper/{name}.{ext}" for ext in ("csv", "md", "tex", "html")]
    t += [f"results/tables/paper/bdrate.{ext}" for ext in ("csv", "md", "tex", "html")]
    t += [f"results/tables/paper/environment.{ext}" for ext in ("md", "html")]
    t += [f"results/plots/bubble.{ext}" for ext in ("png", "pdf")]
    for d in DATASETS:
        t += [f"results/plots/{d}/rd_{m}.{ext}" for m in PAPER_RD_METRICS for ext in ("png", "pdf")]
        t += [f"results/plots/{d}/{n}.{ext}" for n in ("qualitative", "error_maps") for ext in ("png", "pdf")]
    for d in paper_training_datasets():
        t += [f"results/plots/{d}/training_dynamics.{ext}" for ext in ("png", "pdf")]
    return t


# -- targets -------------------------------------------------------------------------------------
def core_targets():
    targets = ["results/tables/summary.csv", "results/tables/summary.md", "results/tables/summary.html",
               "results/tables/environment.json"]
    targets += [f"results/plots/{d}/rd.png" for d in DATASETS]
    return targets


def sparse_targets():
    """The sparse-slice task's table and figures (volbench/sparse/plan.py; rules in sparse.smk)."""
    from volbench.sparse.plan import targets

    return targets(config)


def all_targets():
    return core_targets() + paper_targets() + sparse_targets()
