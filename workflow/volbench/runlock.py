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
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from pathlib import Path

from .io import atomic_write_text

RECORD = "volbench-runs.json"


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


def clear_stale_locks(workdir: str | os.PathLike = ".", log=None) -> bool:
    """Remove .snakemake/locks left by killed runs; record this run. True when locks were removed."""
    meta = Path(workdir) / ".snakemake"
    meta.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    me = {"host": host, "pid": os.getpid(), "start": _start_time(os.getpid())}
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
