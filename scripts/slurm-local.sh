#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, reachable on the loopback address only: for the
# SLURM test (tests/test_slurm.py) and for trying profiles/slurm without a real cluster.
#
#   scripts/slurm-local.sh start    # install slurm-wlm + munge if missing (Debian, root), start
#                                   # munged, slurmctld and slurmd; waits until the node is idle
#   scripts/slurm-local.sh status   # exit 0 when the cluster answers
#   scripts/slurm-local.sh stop     # stop the daemons this script started, remove its slurm.conf
#   scripts/slurm-local.sh env      # print `export SLURM_CONF=...` for sbatch/squeue/snakemake
#
# Idempotent: `start` on a running cluster and `stop` on a stopped one do nothing.
# No accounting database (no slurmdbd): job states come from squeue, so MinJobAge is set high
# (finished jobs stay visible to squeue for an hour), as snakemake-executor-plugin-slurm needs
# with `--slurm-status-command squeue`.
# It writes /etc/slurm/slurm.conf and gres.conf (refusing to replace files it did not write);
# the node offers one pretend GPU (a count, no device), so jobs asking --gpus=1 or --gres=gpu:1
# are scheduled, one at a time.
# Settings (environment): VOLBENCH_SLURM_DIR (state and logs; default
# /var/lib/volbench-slurm), VOLBENCH_SLURM_PORTS (slurmctld and slurmd ports, default
# "6817 6818"), VOLBENCH_SLURM_MEM_FRACTION (share of the RAM the node offers, default 0.9),
# VOLBENCH_SLURM_CPUS and VOLBENCH_SLURM_MEM_MB (declare other CPUs/memory than this machine's:
# nothing is enforced without cgroups, so a test can run more tiny jobs at once).
set -euo pipefail

STATE=${VOLBENCH_SLURM_DIR:-/var/lib/volbench-slurm}
read -r CTLD_PORT SLURMD_PORT <<<"${VOLBENCH_SLURM_PORTS:-6817 6818}"
MEM_FRACTION=${VOLBENCH_SLURM_MEM_FRACTION:-0.9}
# the default location: the executor plugin's job step drops SLURM_* variables (SLURM_CONF
# too) before its nested srun, so a slurm.conf elsewhere is not seen inside jobs. An existing
# slurm.conf that this script did not write is never replaced.
CONF=/etc/slurm/slurm.conf
MARK="# written by scripts/slurm-local.sh"
GRES_CONF=$(dirname "$CONF")/gres.conf
NODE=$(hostname -s)
PARTITION=local

die() { echo "slurm-local: $*" >&2; exit 1; }
say() { echo "slurm-local: $*" >&2; }

need_root() {
    [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons)"
}

pid_alive() {  # pid_alive FILE: the pid in FILE is a running process
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_if_missing() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return
    fi
    command -v apt-get >/dev/null || die "slurm-wlm and munge are missing and this is not Debian/Ubuntu (no apt-get); install SLURM and munge by hand"
    say "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return  # a munged is running already (ours or the system's)
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        say "creating /etc/munge/munge.key"
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile=/etc/munge/munge.key
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        fi
    fi
    chown munge:munge /etc/munge /etc/munge/munge.key
    chmod 0700 /etc/munge
    chmod 0400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged --force
    touch "$STATE/munged.ours"
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return
        sleep 0.2
    done
    die "munged does not answer; see /var/log/munge/munged.log"
}

node_memory_mb() {  # the RAM this node offers: MEM_FRACTION of min(MemTotal, cgroup limit)
    local total limit
    total=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    limit=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || echo max)
    if [ "$limit" != max ] && [ -n "$limit" ]; then
        limit=$((limit / 1048576))
        [ "$limit" -lt "$total" ] && total=$limit
    fi
    awk -v t="$total" -v f="$MEM_FRACTION" 'BEGIN {print int(t * f)}'
}

ours() { [ -f "$CONF" ] && [ "$(head -n1 "$CONF")" = "$MARK" ]; }

write_conf() {
    local cpus mem
    if [ -f "$CONF" ] && ! ours; then
        die "$CONF exists and was not written by this script (a real cluster?); not replacing it"
    fi
    if [ -f "$GRES_CONF" ] && [ "$(head -n1 "$GRES_CONF")" != "$MARK" ]; then
        die "$GRES_CONF exists and was not written by this script; not replacing it"
    fi
    cpus=${VOLBENCH_SLURM_CPUS:-$(nproc)}
    mem=${VOLBENCH_SLURM_MEM_MB:-$(node_memory_mb)}
    mkdir -p "$STATE/ctld" "$STATE/slurmd" "$STATE/log" "$(dirname "$CONF")"
    cat >"$CONF.new" <<EOF
$MARK
# one node, loopback only, no accounting database
ClusterName=volbench-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups (containers): track job processes by their parent, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SlurmdParameters=config_overrides
ReturnToService=2
# finished jobs stay visible to squeue for an hour (the executor plugin polls squeue)
MinJobAge=3600
MaxJobCount=100000
SchedulerParameters=sched_interval=2,bf_interval=2
MessageTimeout=30
SlurmdTimeout=300
InactiveLimit=0
KillWait=5
Waittime=0
MpiDefault=none
# one pretend GPU (a count, no device), so that jobs asking --gpus=1 or --gres=gpu:1 are scheduled
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    mv "$CONF.new" "$CONF"
    printf '%s\nName=gpu File=/dev/null Count=1\n' "$MARK" >"$GRES_CONF"
}

wait_idle() {
    local state=""
    for _ in $(seq 120); do
        state=$(SLURM_CONF=$CONF sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1 || true)
        case "$state" in
            idle | mixed | allocated) return 0 ;;
            down* | drain* | drained*)
                SLURM_CONF=$CONF scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
        esac
        sleep 0.5
    done
    die "node $NODE not ready (state '${state:-no answer}'); see $STATE/log/slurmctld.log and slurmd.log"
}

cmd_start() {
    need_root
    install_if_missing
    mkdir -p "$STATE"
    start_munge
    if pid_alive "$STATE/slurmctld.pid" && pid_alive "$STATE/slurmd.pid"; then
        wait_idle
        say "already running (SLURM_CONF=$CONF)"
        return
    fi
    cmd_stop_slurm  # a half-started cluster: start both afresh
    write_conf
    rm -rf "$STATE/ctld"/* "$STATE/slurmd"/*
    # -c: no job state from an earlier run; -i: ignore state files that cannot be recovered
    slurmctld -f "$CONF" -c -i
    slurmd -f "$CONF"
    wait_idle
    say "running: $(SLURM_CONF=$CONF sinfo -h -N -o '%N, %c CPUs, %m MB') (SLURM_CONF=$CONF)"
}

stop_pidfile() {  # stop_pidfile FILE NAME: TERM, then KILL after 15 s
    local f=$1 name=$2 pid
    pid_alive "$f" || { rm -f "$f"; return 0; }
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 75); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$f"; return 0; }
        sleep 0.2
    done
    say "$name ($pid) did not stop; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$f"
}

cmd_stop_slurm() {
    if pid_alive "$STATE/slurmctld.pid" && ours; then
        # cancel what is left, so that slurmd leaves no job processes behind
        SLURM_CONF=$CONF scancel --full --quiet --partition "$PARTITION" 2>/dev/null || true
    fi
    stop_pidfile "$STATE/slurmd.pid" slurmd
    stop_pidfile "$STATE/slurmctld.pid" slurmctld
}

cmd_stop() {
    need_root
    [ -d "$STATE" ] || return 0
    cmd_stop_slurm
    if [ -f "$STATE/munged.ours" ]; then
        stop_pidfile /run/munge/munged.pid munged
        rm -f "$STATE/munged.ours"
    fi
    if ours; then
        rm -f "$CONF"
        [ -f "$GRES_CONF" ] && [ "$(head -n1 "$GRES_CONF")" = "$MARK" ] && rm -f "$GRES_CONF"
    fi
    say "stopped"
}

cmd_status() {
    local ok=0
    pid_alive "$STATE/slurmctld.pid" && echo "slurmctld: running (pid $(cat "$STATE/slurmctld.pid"))" || { echo "slurmctld: stopped"; ok=1; }
    pid_alive "$STATE/slurmd.pid" && echo "slurmd: running (pid $(cat "$STATE/slurmd.pid"))" || { echo "slurmd: stopped"; ok=1; }
    if [ "$ok" = 0 ]; then
        SLURM_CONF=$CONF sinfo -N -o "%N %P %T %c %m" || ok=1
    fi
    return $ok
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) die "usage: $0 start|stop|status|env" ;;
esac
