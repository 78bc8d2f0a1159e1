# volbench: benchmark compression codecs on 3D volumes.
# Run: snakemake --cores N            (config/config.yaml: the embedded default, offline)
#      snakemake --cores N --configfile config/paper.yaml
import os

from snakemake.utils import min_version

min_version("8.0")


# the embedded default, unless the command line names config files: --configfile replaces it
# completely (no key of the default is merged in; common.smk stops when datasets: or codecs: is
# missing), and --config key=value overrides single keys of either
CONFIGFILES = [str(f) for f in getattr(getattr(workflow, "config_settings", None), "configfiles", None) or ()]
if not CONFIGFILES:

    configfile: os.path.join(workflow.basedir, "config/config.yaml")


# the config is validated by common.smk (the JSON schema workflow/schemas/config.schema.yaml,
# then volbench.config.check_config), before any rule is defined
include: "workflow/rules/common.smk"


# a run killed with SIGKILL leaves Snakemake's locks behind: rerunning the same command must
# resume, so locks of runs that have ended on this host are removed (never a live run's)
if workflow.is_main_process:
    from volbench.runlock import clear_stale_locks

    clear_stale_locks(".")


include: "workflow/rules/data.smk"
include: "workflow/rules/codecs.smk"
include: "workflow/rules/summary.smk"
include: "workflow/rules/paper.smk"
include: "workflow/rules/sparse.smk"


# the report's front page (snakemake --report): what ran, and where each section comes from
report: "workflow/report/workflow.rst"


rule all:
    input:
        all_targets(),
