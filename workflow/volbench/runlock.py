"""Stale Snakemake locks after a killed run.

Snakemake locks the working directory (.snakemake/locks) for the length of a run and removes
the locks when it exits, but a run killed with SIGKILL (or by the OOM killer, or a lost login
session) leaves them behind, and the next run stops with "Directory cannot be locked" until
someone runs `snakemake --unlock`. The Snakefile calls :func:`clear_stale_locks` in the main
Snakemake process: every run records itself (host, pid, process start time) in
.snakemake/volbench-runs.json; when the locks exist and every run recorded on this host is
gone, and none is recorded from another host, the locks are stale and are removed, so that
rerunning the same command resumes the work. A run that is still alive (or one on another
host, which cannot be checked from here) keeps its locks, and Snakemake refuses to start as
before.

A killed Snakemake leaves its running jobs behind too (they are not in its process group when it
was started by a script, and nothing kills them), and the rerun would start the same jobs beside
them, both writing the same outputs. So every run also exports its identity (``VOLBENCH_RUN``,
host:pid:start) to the jobs it starts, and the next run stops (SIGTERM, then SIGKILL) the processes
on this host that carry the identity of a recorded run that is gone: the killed run's jobs, whose
outputs Snakemake marks incomplete and redoes. Nothing else is ever signalled.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

from .io import atomic_write_text

RECORD = "volbench-runs.json"
#: environment variable that marks every job of a run with the run's identity (host:pid:start)
RUN_ENV = "VOLBENCH_RUN"


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "?"
        return "?"  # no /proc: alive, start time unknown
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of stat


def _alive(run: dict) -> bool:
    st = _start_time(int(run["pid"]))
    return st is not None and (st == "?" or run.get("start") in (None, "?") or st == run["start"])


def _run_id(run: dict) -> str:
    return f"{run.get('host')}:{run.get('pid')}:{run.get('start')}"


def processes_of(run_ids) -> list[int]:
    """Processes of this user on this host whose environment marks them as jobs of one of `run_ids`."""
    wanted = {f"{RUN_ENV}={r}".encode() for r in run_ids}
    found = []
    if not wanted:
        return found
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:  # no /proc: such jobs cannot be found here
        return found
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        if wanted.intersection(env.split(b"\0")):
            found.append(pid)
    return found


def stop_orphans(run_ids, log=None, grace: float = 5.0) -> list[int]:
    """Stop the jobs left running by the (dead) runs `run_ids`: SIGTERM, then SIGKILL after `grace`
    seconds. Returns their pids."""
    pids = processes_of(run_ids)
    if not pids:
        return pids
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and processes_of(run_ids):
            time.sleep(0.05)
        if not processes_of(run_ids):
            break
    (log or (lambda m: print(m, file=sys.stderr)))(
        f"volbench: stopped {len(pids)} job process(es) left running by a killed run "
        f"({', '.join(map(str, sorted(pids)))}); their jobs are redone")
    return pids


def clear_stale_locks(workdir: str | os.PathLike = ".", log=None) -> bool:
    """Remove .snakemake/locks left by killed runs and stop the jobs they left running; record this
    run and mark the jobs it starts (RUN_ENV). True when locks were removed."""
    meta = Path(workdir) / ".snakemake"
    meta.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    me = {"host": host, "pid": os.getpid(), "start": _start_time(os.getpid())}
    os.environ[RUN_ENV] = _run_id(me)  # the jobs this run starts inherit it
    removed = False
    with open(meta / f"{RECORD}.lock", "a+") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            runs = json.loads((meta / RECORD).read_text())
            if not isinstance(runs, list):
                runs = []
        except (OSError, ValueError):
            runs = []
        others = [r for r in runs if not (r.get("host") == host and r.get("pid") == me["pid"])]
        live = [r for r in others if r.get("host") != host or _alive(r)]
        stop_orphans([_run_id(r) for r in others if r not in live], log)
        locks = meta / "locks"
        if not live and locks.is_dir() and any(locks.iterdir()):
            for f in locks.iterdir():
                f.unlink(missing_ok=True)
            removed = True
            msg = ("volbench: removed the Snakemake locks of an earlier run that was killed "
                   f"({', '.join(str(r.get('pid')) for r in others) or 'unknown'}); resuming")
            (log or (lambda m: print(m, file=sys.stderr)))(msg)
        atomic_write_text(meta / RECORD, json.dumps(live + [me]))
    return removed
