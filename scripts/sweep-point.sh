#!/usr/bin/env bash
# sweep-point.sh -- run one point of a sweep made by scripts/sweep.sh.
#
# sweep.sh copies this file to SWEEP_DIR/bin/point.sh, and GNU parallel (on
# this or other hosts) or a Slurm array task runs that copy for each point:
#
#   point.sh [--cnn PATH] [--threads N] [--retries N] SWEEP_DIR INDEX
#   point.sh --state SWEEP_DIR [INDEX...]
#
# The first form brings point INDEX (a line of SWEEP_DIR/commands.tsv) to
# "done", deciding from the run directory's status.json (see src/status.rs):
#
#   no run directory yet         -> cnn train (fresh)
#   done                         -> nothing (skipped)
#   running, process alive       -> nothing (another sweep runs it)
#   killed / interrupted         -> cnn train --resume RUN_DIR (or a fresh
#                                   start with --force when it never saved)
#   failed                       -> retried (resume from its last checkpoint,
#                                   or fresh) at most --retries times per call,
#                                   never after a bad-input failure (exit 2) of
#                                   its own; then reported
#
# Exit status: 0 done (or skipped), 1 failed, 130 interrupted (Ctrl-C,
# SIGTERM: the signal reaches cnn, which saves and stops).
#
# A lock (flock on SWEEP_DIR/locks/INDEX.lock, held while cnn runs) keeps two
# sweeps from running the same point; on a shared filesystem it also tells a
# "running" status left by a crashed host from a live one.
#
# --state prints one line per point: INDEX, NAME, STATE and the first line of
# the status message, tab-separated. STATE is one of new, done, running,
# killed, interrupted, failed, unreadable.
#
# Every action is appended to SWEEP_DIR/sweep.log (time, host, pid, index,
# name, event) and cnn's output to SWEEP_DIR/logs/NAME.log.
set -uo pipefail

CNN_BIN=cnn
THREADS=""
RETRIES=1
MODE=run

die() {
    printf 'point.sh: %s\n' "$*" >&2
    exit 2
}

while (($#)); do
    case $1 in
    --cnn) CNN_BIN=${2:?--cnn needs a path}; shift 2 ;;
    --threads) THREADS=${2:?--threads needs a number}; shift 2 ;;
    --retries) RETRIES=${2:?--retries needs a number}; shift 2 ;;
    --state) MODE=state; shift ;;
    --) shift; break ;;
    -*) die "unknown option $1" ;;
    *) break ;;
    esac
done
(($# >= 1)) || die "usage: point.sh [--cnn PATH] [--threads N] [--retries N] SWEEP_DIR INDEX"
SWEEP=$1
shift
COMMANDS=$SWEEP/commands.tsv
[[ -f $COMMANDS ]] || die "$COMMANDS is missing; is $SWEEP a sweep directory made by scripts/sweep.sh?"
HOST=$(cat /proc/sys/kernel/hostname 2>/dev/null || hostname)

# ---------------------------------------------------------------- points
# commands.tsv: a header, then INDEX NAME FRESH RESUME where FRESH and
# RESUME are the `cnn` arguments, shell-quoted by sweep.sh (printf %q).
NAME="" FRESH=() RESUME=()
load_point() {
    local line fresh resume
    line=$(awk -F'\t' -v i="$1" 'NR > 1 && $1 == i { print; exit }' "$COMMANDS")
    [[ -n $line ]] || die "$COMMANDS has no point $1"
    IFS=$'\t' read -r _ NAME fresh resume <<<"$line"
    eval "FRESH=($fresh)"
    eval "RESUME=($resume)"
    RUN_DIR=$SWEEP/runs/$NAME
}

# ---------------------------------------------------------------- state
# Mirrors status::read in src/status.rs: status.json is written by cnn with
# serde_json's pretty printer, one field per line.
field() { # FILE NAME -> the raw JSON value of a top-level field
    sed -n "s/^  \"$2\": \\(.*\\)\$/\\1/p" "$1" | sed 's/,$//' | head -n 1
}

pid_alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

lock_free() { # INDEX -> true when no sweep process holds the point's lock
    command -v flock >/dev/null || return 1
    mkdir -p "$SWEEP/locks" 2>/dev/null
    (flock -n 9) 9>>"$SWEEP/locks/$1.lock"
}

STATE="" MESSAGE="" EXIT_CODE="" HAVE_LOCK=0
read_state() { # INDEX (after load_point)
    local f=$RUN_DIR/status.json status pid host
    MESSAGE="" EXIT_CODE=""
    if [[ ! -e $RUN_DIR ]] || [[ -z $(ls -A "$RUN_DIR" 2>/dev/null) && ! -e $f ]]; then
        STATE=new
        return
    fi
    if [[ ! -f $f ]]; then
        # cnn creates the directory and writes status.json first; a directory
        # without it was stopped before anything was recorded.
        STATE=new
        MESSAGE="run directory without status.json"
        return
    fi
    status=$(field "$f" status)
    status=${status//\"/}
    pid=$(field "$f" pid)
    host=$(field "$f" host)
    host=${host//\"/}
    EXIT_CODE=$(field "$f" exit_code)
    MESSAGE=$(field "$f" message)
    MESSAGE=${MESSAGE#\"}
    MESSAGE=${MESSAGE%\"}
    MESSAGE=${MESSAGE%%\\n*}
    MESSAGE=${MESSAGE//\\\"/\"}
    [[ $MESSAGE == null ]] && MESSAGE=""
    case $status in
    done | failed | interrupted) STATE=$status ;;
    running)
        STATE=running
        if [[ $host == "$HOST" ]]; then
            if ! pid_alive "$pid"; then
                STATE=killed
                MESSAGE="process $pid on $host is gone"
            fi
        elif ((HAVE_LOCK)) || lock_free "$1"; then
            STATE=killed
            MESSAGE="was running on $host, which no longer holds the point's lock"
        fi
        [[ $STATE == running ]] && MESSAGE="running as process $pid on $host"
        ;;
    *)
        STATE=unreadable
        MESSAGE="$f has no status field cnn writes"
        ;;
    esac
}

if [[ $MODE == state ]]; then
    if (($# == 0)); then
        mapfile -t indices < <(awk -F'\t' 'NR > 1 { print $1 }' "$COMMANDS")
        set -- "${indices[@]}"
    fi
    for i in "$@"; do
        load_point "$i"
        read_state "$i"
        printf '%s\t%s\t%s\t%s\n' "$i" "$NAME" "$STATE" "$MESSAGE"
    done
    exit 0
fi

# ---------------------------------------------------------------- run
(($# == 1)) || die "usage: point.sh [--cnn PATH] [--threads N] [--retries N] SWEEP_DIR INDEX"
INDEX=$1
load_point "$INDEX"
mkdir -p "$SWEEP/logs" "$SWEEP/locks"
LOG=$SWEEP/logs/$NAME.log

event() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$HOST" "$$" \
        "$INDEX" "$NAME" "$*" >>"$SWEEP/sweep.log"
}
note() { printf '[%s] %s\n' "$NAME" "$*" >&2; }

INTERRUPTED=0
trap 'INTERRUPTED=1' INT TERM

# Held until this script exits (and by cnn, which inherits it).
if command -v flock >/dev/null; then
    exec 9>>"$SWEEP/locks/$INDEX.lock"
    if ! flock -n 9; then
        note "skipped: another sweep process is running this point"
        event skip-locked
        exit 0
    fi
    HAVE_LOCK=1
fi

retries_left=$RETRIES
last_rc=""
while :; do
    read_state "$INDEX"
    case $STATE in
    done)
        if [[ -z $last_rc ]]; then
            event skip-done
        else
            note "done: $(grep '^best epoch' "$LOG" 2>/dev/null | tail -n 1)"
        fi
        exit 0
        ;;
    running)
        note "skipped: $MESSAGE"
        event skip-running
        exit 0
        ;;
    unreadable)
        note "cannot tell its state: $MESSAGE; delete $RUN_DIR/status.json to run it again"
        event unreadable
        exit 1
        ;;
    esac

    if [[ -n $last_rc ]]; then
        # cnn ran in this call and the point is not done.
        if ((last_rc == 130 || INTERRUPTED)); then
            note "interrupted; it saved its state and resumes when the sweep runs again"
            exit 130
        fi
        if [[ $STATE == failed && $EXIT_CODE == 2 ]]; then
            note "failed (bad input, not retried): $MESSAGE (log: $LOG)"
            event gave-up
            exit 1
        fi
        if ((retries_left <= 0)); then
            note "failed: ${MESSAGE:-cnn exited with status $last_rc} (log: $LOG)"
            event gave-up
            exit 1
        fi
        retries_left=$((retries_left - 1))
        how=retry
    elif [[ $STATE == failed ]]; then
        if ((retries_left <= 0)); then
            note "failed earlier, not retried (--retries 0): $MESSAGE"
            event gave-up
            exit 1
        fi
        retries_left=$((retries_left - 1))
        how=retry
    else
        how=""
    fi
    ((INTERRUPTED)) && exit 130

    case $STATE in
    new)
        args=("${FRESH[@]}")
        [[ -n $MESSAGE ]] && args+=(--force)
        what=${how:-fresh}
        ;;
    *)
        if [[ -f $RUN_DIR/last.safetensors ]]; then
            args=("${RESUME[@]}")
            what=${how:+$how-}resume
        else
            # Stopped before its first checkpoint: nothing to resume from.
            args=("${FRESH[@]}" --force)
            what=${how:+$how-}restart
        fi
        ;;
    esac
    [[ -n $THREADS ]] && args=(--threads "$THREADS" "${args[@]}")
    case $what in
    fresh) note "starting" ;;
    resume)
        why=${MESSAGE:-$STATE}
        note "resuming (${why%%;*})"
        ;;
    restart) note "starting again (${MESSAGE:-$STATE}, before its first checkpoint)" ;;
    *) note "$what after failure: ${MESSAGE:-cnn exited with status $last_rc}" ;;
    esac
    event "$what"
    printf '\n==> %s %s: %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$HOST" "$CNN_BIN" "${args[*]}" >>"$LOG"
    "$CNN_BIN" "${args[@]}" </dev/null >>"$LOG" 2>&1
    last_rc=$?
    event "exit $last_rc"
done
