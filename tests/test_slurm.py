"""The workflow on a real SLURM cluster: scripts/slurm-local.sh starts munged, slurmctld and
slurmd on this machine (one node, loopback), the tiny config runs through
`snakemake --executor slurm` with profiles/slurm, and its summary must equal a local run's on
every deterministic column (and its compressed files byte for byte). The daemons the test
started are stopped at the end.

Needs root on Debian/Ubuntu (the script installs slurm-wlm and munge with apt-get when they
are missing). LPIPS is switched off in both runs (the same for both; it only costs time).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm-local.sh"
TINY = REPO / "tests" / "configs" / "tiny.yaml"
TARGET = "results/tables/summary.csv"
NONDETERMINISTIC = ["encode_seconds", "decode_seconds", "decode_mvox_s", "encode_peak_mb", "decode_peak_mb"]

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                       reason="the SLURM test starts daemons and may install slurm-wlm: run it as root"),
    pytest.mark.skipif(not Path("/etc/debian_version").exists() or shutil.which("apt-get") is None,
                       reason="the SLURM test installs slurm-wlm/munge with apt-get: Debian or Ubuntu only"),
]


def _script(cmd: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), cmd], env=env, capture_output=True, text=True, timeout=900)


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def cluster():
    # the node declares 8 CPUs and 256 GB (not enforced: no cgroups) so that each wave of the
    # tiny DAG's jobs runs at once: the plugin polls job states at growing intervals, and a
    # node of this machine's size would queue the tiny jobs behind each other
    env = {**_env(), "VOLBENCH_SLURM_CPUS": "8", "VOLBENCH_SLURM_MEM_MB": "256000"}
    was_running = _script("status", env).returncode == 0
    started = _script("start", env)
    assert started.returncode == 0, f"slurm-local.sh start failed:\n{started.stdout}\n{started.stderr}"
    conf = _script("env", env).stdout.strip().removeprefix("export SLURM_CONF=")
    try:
        yield conf
    finally:
        if not was_running:
            stopped = _script("stop", env)
            assert stopped.returncode == 0, stopped.stderr
            assert _script("status", env).returncode != 0, "the SLURM daemons are still running"


def _tiny_without_lpips(tmp_path: Path, gpu_codec: bool = False) -> Path:
    import yaml

    cfg = yaml.safe_load(TINY.read_text())
    cfg.setdefault("metrics", {}).setdefault("lpips", {})["enabled"] = False
    if gpu_codec:  # a codec instance whose jobs request a GPU (the codec itself runs on the CPU)
        cfg["codecs"]["zstd_gpu"] = {"codec": "zstd", "gpu": True, "rate_points": [{"level": 1}]}
    out = tmp_path / f"tiny-nolpips{'-gpu' if gpu_codec else ''}.yaml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def _cmd(workdir: Path, config: Path, *extra: str, target: str = TARGET) -> list[str]:
    exe = Path(sys.executable).with_name("snakemake")
    return [str(exe) if exe.exists() else "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
            str(workdir), "--configfile", str(config), *extra, target]


def _snakemake(workdir: Path, config: Path, *extra: str, env: dict, timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(_cmd(workdir, config, *extra), env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def test_tiny_config_on_slurm_matches_local(cluster, tmp_path):
    import pandas as pd

    local, slurm = tmp_path / "local", tmp_path / "slurm"
    config = _tiny_without_lpips(tmp_path)
    _snakemake(local, config, "--cores", "2", env=_env(), timeout=600)

    env = {**_env(), "SLURM_CONF": cluster}
    slurm_args = ["--workflow-profile", str(REPO / "profiles" / "slurm"),
                  # this one-node test cluster: no accounts, no accounting database (squeue
                  # reports job states), quick first status check
                  "--slurm-no-account", "--slurm-status-command", "squeue",
                  "--slurm-init-seconds-before-status-checks", "1", "--jobs", "8", "--latency-wait", "5"]
    proc = _snakemake(slurm, config, *slurm_args, env=env, timeout=900)
    log = proc.stdout + proc.stderr
    run_id = re.search(r"SLURM run ID: (\S+)", log)
    assert run_id and "submitted with SLURM jobid" in log, f"no job went through sbatch:\n{log[-3000:]}"
    # every job of this run is known to slurmctld, completed (squeue shows finished jobs for
    # MinJobAge): 2 prepare + 6 cells x (encode, decode, score) + summary
    jobs = _jobs(run_id.group(1), env)
    assert len(jobs) == 21 and {state for state, _ in jobs} == {"COMPLETED"}, jobs
    assert all("gpu" not in tres for _, tres in jobs), f"CPU codecs' jobs asked for a GPU: {jobs}"

    a, b = pd.read_csv(local / TARGET), pd.read_csv(slurm / TARGET)
    assert len(a) == 6 and (a["status"] == "ok").all(), a[["dataset", "codec", "point", "status", "error"]]
    drop = [c for c in NONDETERMINISTIC if c in a.columns]
    pd.testing.assert_frame_equal(a.drop(columns=drop), b.drop(columns=drop), check_exact=True)
    vbc = sorted(p.relative_to(local) for p in (local / "results/encoded").rglob("*.vbc"))
    assert len(vbc) == 6
    for rel in vbc:
        assert (local / rel).read_bytes() == (slurm / rel).read_bytes(), rel

    # a codec whose jobs use a GPU: its encode asks SLURM for one (--gpus=1; the test cluster
    # has one pretend GPU) and still runs
    gpu_config = _tiny_without_lpips(tmp_path, gpu_codec=True)
    proc = subprocess.run(_cmd(slurm, gpu_config, *slurm_args, target="results/encoded/tus/zstd_gpu/level-1"),
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (slurm / "results/encoded/tus/zstd_gpu/level-1/volume.vbc").exists()
    run_id = re.search(r"SLURM run ID: (\S+)", proc.stdout + proc.stderr).group(1)
    jobs = _jobs(run_id, env)
    assert jobs == [("COMPLETED", "gres:gpu:1")], jobs


def _jobs(run_id: str, env: dict) -> list[tuple[str, str]]:
    """(state, GPUs asked per job) of every job of a Snakemake run (squeue sees finished jobs)."""
    sq = subprocess.run(["squeue", "--states=all", "--noheader", "--name", run_id, "-O", "State:20,tres-per-job:40"],
                        env=env, capture_output=True, text=True, timeout=60)
    assert sq.returncode == 0, sq.stderr
    return [tuple(ln.split()[:2]) for ln in sq.stdout.splitlines() if ln.strip()]
