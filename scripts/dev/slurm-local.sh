#!/usr/bin/env bash
# slurm-local.sh -- run a throw-away single-node Slurm cluster on this machine.
#
# Meant for testing the `cnn` hyperparameter sweep (sbatch job arrays) on a
# Debian 12 (bookworm) box or container without systemd.  It:
#   * installs Debian's slurm-wlm (slurmctld + slurmd + client tools) and munge
#     with apt-get (skipped when already installed);
#   * writes a minimal single-node slurm.conf under $SLURM_LOCAL_DIR, built from
#     what `slurmd -C` reports for this machine, and links
#     /etc/slurm/slurm.conf to it so sbatch/squeue/... work without SLURM_CONF;
#   * starts munged, slurmctld and slurmd as plain background daemons (no
#     systemd needed) and waits until the node is idle.
#
# Usage (as root):
#   scripts/dev/slurm-local.sh start     # install if needed, configure, start, wait for idle node
#   scripts/dev/slurm-local.sh status    # daemons, sinfo, squeue
#   scripts/dev/slurm-local.sh stop      # scontrol shutdown, then stop munged if we started it
#   scripts/dev/slurm-local.sh restart
#   scripts/dev/slurm-local.sh purge     # stop, then delete $SLURM_LOCAL_DIR and our /etc/slurm/slurm.conf link
#
# Environment:
#   SLURM_LOCAL_DIR   state/spool/log/config directory   (default /tmp/slurm-local)
#   SLURM_LOCAL_WAIT  seconds to wait for the node to become idle (default 60)
#
# Design notes (why the config looks like it does):
#   * No cgroups: in containers (gVisor, docker) the cgroup plugins do not work,
#     so ProctrackType=proctrack/linuxproc, TaskPlugin=task/none,
#     JobAcctGatherType=jobacct_gather/none.  Consequence: --mem is only used
#     for scheduling, it is NOT enforced.
#   * No accounting daemon (slurmdbd): `sacct` does not work.  Use the exit
#     status of `sbatch --wait`, or `scontrol show job <id>` (JobState,
#     ExitCode) within MinJobAge (set to 3600 s here) after the job ends.
#   * SelectType=select/cons_tres with CR_Core_Memory and DefMemPerCPU so that
#     jobs without --mem do not grab the whole node's memory.
#   * SlurmUser=root / SlurmdUser=root: simplest thing that works when running
#     as root; jobs run as the submitting user.
set -euo pipefail

DIR="${SLURM_LOCAL_DIR:-/tmp/slurm-local}"
CONF="$DIR/slurm.conf"
ETC_CONF=/etc/slurm/slurm.conf
WAIT="${SLURM_LOCAL_WAIT:-60}"
CLUSTER=local
PARTITION=debug
NODE="$(hostname -s)"
MUNGE_SOCKET=/run/munge/munge.socket.2
MUNGE_PIDFILE=/run/munge/munged.pid
PKGS=(slurm-wlm slurmctld slurmd slurm-client munge)

export SLURM_CONF="$CONF"

log() { printf '[slurm-local] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (installs packages, writes /etc/slurm, runs daemons as root)"
}

# ---------------------------------------------------------------- install
pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

install_pkgs() {
    local missing=() p
    for p in "${PKGS[@]}"; do pkg_installed "$p" || missing+=("$p"); done
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "packages already installed: ${PKGS[*]}"
        return
    fi
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packages' own init scripts / systemd units from starting the
    # daemons during install (we start them ourselves with our own config).
    local made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local rc=0
    apt-get install -y -q --no-install-recommends "${PKGS[@]}" || rc=$?
    if [[ $rc -ne 0 ]]; then
        log "apt-get install failed (rc=$rc); running apt-get update and retrying"
        rc=0
        apt-get update -q && apt-get install -y -q --no-install-recommends "${PKGS[@]}" || rc=$?
    fi
    [[ $made_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d
    [[ $rc -eq 0 ]] || die "apt-get install ${PKGS[*]} failed"
}

# ---------------------------------------------------------------- config
write_conf() {
    mkdir -p "$DIR"/{state,spool,log,run}
    chmod 755 "$DIR"
    # slurmd -C prints e.g.
    #   NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105
    local hw cpus mem defmem
    hw="$(slurmd -C 2>/dev/null | grep '^NodeName=' | head -n1)" || true
    [[ -n $hw ]] || die "slurmd -C printed no NodeName line"
    hw="${hw#NodeName=* }"            # drop NodeName=..., keep the hardware fields
    cpus="$(sed -n 's/.*\bCPUs=\([0-9]*\).*/\1/p' <<<"$hw")"
    mem="$(sed -n 's/.*\bRealMemory=\([0-9]*\).*/\1/p' <<<"$hw")"
    [[ -n $cpus && -n $mem ]] || die "cannot parse slurmd -C output: $hw"
    defmem=$(( mem / cpus ))

    # Open MPI's ranks started by srun (cnn train --distributed mpi) find
    # each other through PMIx, when Slurm has the plugin.
    mpi_default=none
    if srun --mpi=list 2>&1 | grep -qw pmix; then mpi_default=pmix; fi

    cat >"$CONF.tmp" <<EOF
# Generated by scripts/dev/slurm-local.sh (rewritten on start only if the hardware changed).
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=$mpi_default
MailProg=/bin/true

StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# No cgroups in a container: track processes via /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none

SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$defmem

ReturnToService=2
# Keep finished jobs visible to 'scontrol show job' for an hour (no sacct here).
MinJobAge=3600
MaxArraySize=10001
MaxJobCount=100000
KillWait=10
SlurmdTimeout=300
InactiveLimit=0

NodeName=$NODE NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    if cmp -s "$CONF.tmp" "$CONF"; then rm -f "$CONF.tmp"; else mv -f "$CONF.tmp" "$CONF"; fi

    # Make client tools find the config without SLURM_CONF.
    mkdir -p /etc/slurm
    if [[ -L $ETC_CONF || ! -e $ETC_CONF ]]; then
        ln -sfn "$CONF" "$ETC_CONF"
    elif ! cmp -s "$ETC_CONF" "$CONF"; then
        log "WARNING: $ETC_CONF exists and is not ours; client tools need: export SLURM_CONF=$CONF"
    fi
}

# ---------------------------------------------------------------- daemons
pid_alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }
pidfile_pid() { [[ -r $1 ]] && tr -dc 0-9 <"$1" || true; }
ctld_pid() { pidfile_pid "$DIR/run/slurmctld.pid"; }
slurmd_pid() { pidfile_pid "$DIR/run/slurmd.pid"; }

munge_ok() { munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; }

start_munge() {
    if munge_ok; then log "munged already running"; return; fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile=/etc/munge/munge.key
        else
            dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
        fi
    fi
    chown -R munge:munge /etc/munge
    chmod 700 /etc/munge
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    chmod 755 /run/munge
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged
    touch "$DIR/run/munged.ours"
    local i
    for i in $(seq 50); do munge_ok && return; sleep 0.1; done
    die "munged did not come up (see /var/log/munge/munged.log)"
}

start_slurm() {
    if pid_alive "$(ctld_pid)"; then
        log "slurmctld already running (pid $(ctld_pid))"
    else
        log "starting slurmctld"
        slurmctld -f "$CONF" || die "slurmctld failed to start (see $DIR/log/slurmctld.log)"
    fi
    if pid_alive "$(slurmd_pid)"; then
        log "slurmd already running (pid $(slurmd_pid))"
    else
        log "starting slurmd"
        slurmd -f "$CONF" -N "$NODE" || die "slurmd failed to start (see $DIR/log/slurmd.log)"
    fi
}

wait_idle() {
    local t0=$SECONDS st=""
    while (( SECONDS - t0 < WAIT )); do
        st="$(sinfo -h -N -n "$NODE" -o '%t' 2>/dev/null | head -n1 || true)"
        case "$st" in
            idle|mix|alloc) log "node $NODE is $st"; return 0 ;;
            down*|drain*|drng*|fail*)
                # e.g. left DOWN from a previous run; try to resume it once.
                scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    log "node did not become idle within ${WAIT}s (state: '${st:-unknown}')"
    sinfo -R 2>/dev/null || true
    log "logs: $DIR/log/slurmctld.log $DIR/log/slurmd.log"
    return 1
}

cmd_start() {
    need_root
    local t0=$SECONDS
    install_pkgs
    local t1=$SECONDS
    if pid_alive "$(ctld_pid)" && pid_alive "$(slurmd_pid)" && munge_ok; then
        log "already running (config $CONF)"
    else
        write_conf
        start_munge
        start_slurm
    fi
    wait_idle || exit 1
    log "install: $((t1 - t0))s, start: $((SECONDS - t1))s"
    cat <<EOF

Slurm is running: cluster '$CLUSTER', node '$NODE', partition '$PARTITION' (default).
  config : $CONF (linked from $ETC_CONF; or export SLURM_CONF=$CONF)
  logs   : $DIR/log/
Try:
  sinfo
  sbatch --wait --array=0-3 --wrap 'echo task \$SLURM_ARRAY_TASK_ID on \$(hostname)'; echo rc=\$?
  squeue
  scontrol show job <jobid>      # JobState / ExitCode (kept 3600s; no sacct: accounting is off)
Stop with:  $0 stop
EOF
}

wait_gone() { # pid timeout_s
    local i
    for i in $(seq $(( $2 * 10 ))); do pid_alive "$1" || return 0; sleep 0.1; done
    return 1
}

cmd_stop() {
    need_root
    local cp dp mp
    cp="$(ctld_pid)"; dp="$(slurmd_pid)"
    if pid_alive "$cp"; then
        log "scontrol shutdown"
        scontrol shutdown >/dev/null 2>&1 || true
    fi
    for p in "$dp" "$cp"; do
        pid_alive "$p" || continue
        kill -TERM "$p" 2>/dev/null || true
        wait_gone "$p" 15 || { log "pid $p still alive, SIGKILL"; kill -KILL "$p" 2>/dev/null || true; }
    done
    if [[ -e $DIR/run/munged.ours ]]; then
        mp="$(pidfile_pid "$MUNGE_PIDFILE")"
        if pid_alive "$mp"; then
            log "stopping munged (pid $mp)"
            kill -TERM "$mp" 2>/dev/null || true
            wait_gone "$mp" 10 || kill -KILL "$mp" 2>/dev/null || true
        fi
        rm -f "$DIR/run/munged.ours"
    fi
    rm -f "$DIR/run/slurmctld.pid" "$DIR/run/slurmd.pid"
    log "stopped (state kept in $DIR; '$0 purge' removes it)"
}

cmd_status() {
    local cp dp mp rc=0
    cp="$(ctld_pid)"; dp="$(slurmd_pid)"; mp="$(pidfile_pid "$MUNGE_PIDFILE")"
    if munge_ok; then echo "munged    : running (pid ${mp:-?})"; else echo "munged    : not running"; rc=1; fi
    if pid_alive "$cp"; then echo "slurmctld : running (pid $cp)"; else echo "slurmctld : not running"; rc=1; fi
    if pid_alive "$dp"; then echo "slurmd    : running (pid $dp)"; else echo "slurmd    : not running"; rc=1; fi
    echo "config    : $CONF"
    if [[ $rc -eq 0 ]]; then
        echo; sinfo -N -l 2>&1 || true
        echo; squeue 2>&1 || true
    fi
    return $rc
}

cmd_purge() {
    cmd_stop
    [[ -L $ETC_CONF && $(readlink "$ETC_CONF") == "$CONF" ]] && rm -f "$ETC_CONF"
    rm -rf "$DIR"
    log "removed $DIR"
}

case "${1:-}" in
    start)   cmd_start ;;
    stop)    cmd_stop ;;
    restart) cmd_stop; cmd_start ;;
    status)  cmd_status ;;
    purge)   cmd_purge ;;
    *) echo "usage: $0 {start|stop|status|restart|purge}" >&2; exit 2 ;;
esac
