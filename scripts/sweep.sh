#!/usr/bin/env bash
# sweep.sh -- hyperparameter sweeps of `cnn train`, run by GNU parallel (one
# machine or many over ssh) or as a Slurm job array. We do not schedule
# anything ourselves: `cnn sweep plan` turns a grid into one `cnn train`
# command per point and writes them down, and this script hands the points to
# the engine, each run by `cnn sweep point`.
#
# Usage:
#   scripts/sweep.sh --base CONFIG --out SWEEP_DIR [OPTIONS] KEY=V1,V2,... [KEY=...]
#                    [--slurm [SBATCH OPTIONS...]] [-- EXTRA CNN TRAIN ARGS]
#
# Grid:
#   KEY=V1,V2,...   a config path as `cnn train --set` takes it
#                   (training.optimizer.lr, training.batch_size, layers.1.out_features)
#                   and its values; commas inside [...], {...} or "..." do not
#                   split (layers.0.kernel_size=[3,3],[5,5]). Every combination is
#                   a point; a KEY with one value applies to all points.
#   --random K      run only K distinct points drawn from the grid ...
#   --seed S        ... with this seed (default 0): same seed, same points, on
#                   any machine.
#
# Running:
#   --jobs N        points run at a time (per host; default 1, or cores / --threads);
#                   with --slurm, at most N array tasks at once (--array=...%N)
#   --threads T     CPU threads per run (default: cores / jobs, at least 1; with
#                   --slurm, the task's --cpus-per-task)
#   --retries N     times a failed point is tried again per sweep run (default 1)
#   -n, --ranks N   each point is one distributed run of N ranks (cnn train
#                   --distributed mpi, which needs a cnn built with --features
#                   mpi): started with mpirun -n N, or inside a Slurm task with
#                   srun --kill-on-bad-exit=1 -n N (CNN_LAUNCHER replaces the
#                   launcher, e.g. "srun --mpi=pmix"); --threads is then per rank,
#                   and with --slurm each array task asks for --ntasks=N
#   -S, --sshlogin LOGINS, --sshloginfile FILE
#                   passed to GNU parallel to run points on other machines; they
#                   need SWEEP_DIR, the base config and the cnn binary at the same
#                   paths (a shared filesystem) and run in the same directory.
#   --cnn PATH      the cnn binary (default: $CNN, else target/release/cnn of this
#                   repository, else cnn on PATH)
#   --dry-run       check every point and print its command; write and run nothing
#   --slurm [SBATCH OPTIONS...]
#                   submit a Slurm job array instead, one task per unfinished point.
#                   Every word after --slurm up to the first KEY=VALUES word or a
#                   lone `--` goes to sbatch as is (so sweep options come before
#                   --slurm), e.g. --slurm --partition=cpu -c 4 --mem=4G --time=1:00:00.
#                   With --wait (-W) among them, wait for the array and summarize.
#   -- ARGS         given to every `cnn train` (--epochs 2 --data-dir DIR --device cuda ...)
#
# What it writes into SWEEP_DIR:
#   manifest.json   the base config, the axes, every point (index, name, run
#                   directory, its KEY -> value map) and the exact command; written
#                   before anything runs. Re-running into the same SWEEP_DIR with a
#                   different grid (or a changed base config) is refused.
#   commands.tsv    every point's fresh and resume command, shell-quoted, to run
#                   one by hand
#   runs/NAME/      one `cnn train` run directory per point, NAME from the varied
#                   values (lr=0.001,batch_size=64); its config.json is the resolved config
#   logs/NAME.log   cnn's output; sweep.log: every start, resume, retry and skip;
#   locks/          held by each running point; parallel.joblog: GNU parallel's job
#                   log; slurm/: sweep.sbatch, job ids, task output
#
# Re-running the same command resumes: done points are skipped, killed or
# interrupted ones continue from their last checkpoint (cnn train --resume),
# failed ones are retried (--retries) and then reported. Ctrl-C asks every
# running point to save and stop (cnn exits 130) and then exits 130.
# `cnn sweep --help` describes the subcommands this script calls.
#
# Exit status: 0 all points done (or submitted, with --slurm), 1 some point
# failed or did not finish, 2 bad usage (nothing was run), 130 interrupted.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$SCRIPT_DIR")

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die() { # exit 2: bad usage; nothing was run
    printf 'sweep.sh: %s\n' "$*" >&2
    exit 2
}
note() { printf 'sweep: %s\n' "$*" >&2; }

# ---------------------------------------------------------------- arguments
# The engines' options are ours; the grid and the train arguments go to
# `cnn sweep plan`, which checks them.
OUT="" JOBS="" THREADS="" RETRIES=1 RANKS=1 DRY_RUN=0
CNN_BIN=${CNN:-}
SLURM=0
SLURM_OPTS=() PARALLEL_OPTS=() PLAN=() EXTRA=()

# Where the words after --slurm end: a grid axis, a config path then `=`
# (`cnn sweep plan` checks the axes themselves).
is_axis() { [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*((\.[A-Za-z0-9_]+)|(\[[0-9]+\]))*= ]]; }
is_count() { [[ $1 =~ ^[0-9]+$ ]] && (($1 < 1000000000)); }

while (($#)); do
    # --option=value
    case $1 in
    --base=* | --out=* | --jobs=* | --threads=* | --random=* | --seed=* | --retries=* | --ranks=* | --cnn=* | --sshlogin=* | --sshloginfile=*)
        set -- "${1%%=*}" "${1#*=}" "${@:2}"
        ;;
    esac
    case $1 in
    --base | --out | --jobs | -j | --threads | --random | --seed | --retries | -n | --ranks | --cnn | -S | --sshlogin | --sshloginfile)
        (($# >= 2)) || die "$1 needs a value; see --help"
        ;;
    esac
    case $1 in
    -h | --help) usage; exit 0 ;;
    --base | --random | --seed) PLAN+=("$1" "$2"); shift 2 ;;
    --out) OUT=$2; PLAN+=("$1" "$2"); shift 2 ;;
    --jobs | -j) JOBS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --retries) RETRIES=$2; shift 2 ;;
    -n | --ranks) RANKS=$2; shift 2 ;;
    --cnn) CNN_BIN=$2; shift 2 ;;
    -S | --sshlogin) PARALLEL_OPTS+=(--sshlogin "$2"); shift 2 ;;
    --sshloginfile) PARALLEL_OPTS+=(--sshloginfile "$2"); shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --slurm)
        SLURM=1
        shift
        while (($#)) && [[ $1 != -- ]] && ! is_axis "$1"; do
            SLURM_OPTS+=("$1")
            shift
        done
        ;;
    --) shift; EXTRA=("$@"); break ;;
    -*) die "unknown option $1; see --help (arguments for cnn train go after --)" ;;
    *) PLAN+=("$1"); shift ;;
    esac
done

[[ -z $JOBS ]] || { is_count "$JOBS" && ((JOBS >= 1)); } || die "--jobs $JOBS: expected a whole number of at least 1"
[[ -z $THREADS ]] || { is_count "$THREADS" && ((THREADS >= 1)); } || die "--threads $THREADS: expected a whole number of at least 1"
is_count "$RETRIES" || die "--retries $RETRIES: expected a whole number (0 for no retries)"
{ is_count "$RANKS" && ((RANKS >= 1)); } || die "--ranks $RANKS: expected a whole number of at least 1"
# A multi-rank point is a distributed run: its train flags say so (and the
# manifest records them, so that a resume is one too).
POINT_OPTS=(--retries "$RETRIES")
if ((RANKS > 1)); then
    POINT_OPTS+=(--ranks "$RANKS")
    distributed=0
    for a in "${EXTRA[@]}"; do [[ $a == --distributed || $a == --distributed=* ]] && distributed=1; done
    ((distributed)) || EXTRA+=(--distributed mpi)
fi
if ((SLURM)) && ((${#PARALLEL_OPTS[@]})); then
    die "--sshlogin and --slurm do not mix: Slurm places the tasks itself"
fi

# ---------------------------------------------------------------- cnn binary
if [[ -z $CNN_BIN ]]; then
    if [[ -x $REPO/target/release/cnn ]]; then
        CNN_BIN=$REPO/target/release/cnn
    else
        CNN_BIN=cnn
    fi
fi
resolved=$(command -v -- "$CNN_BIN" 2>/dev/null) ||
    die "cannot find the cnn binary '$CNN_BIN': build it with 'cargo build --release', or pass --cnn PATH (or set CNN=PATH)"
[[ $resolved == /* ]] || resolved=$PWD/$resolved
CNN_BIN=$resolved

# ---------------------------------------------------------------- plan
# Checks every point and writes manifest.json and commands.tsv (exit 2 and
# nothing written when something is wrong); with --dry-run, only checks and
# prints the commands.
((DRY_RUN)) && PLAN+=(--dry-run)
"$CNN_BIN" sweep plan "${PLAN[@]}" -- "${EXTRA[@]}" || exit
((DRY_RUN)) && exit 0
OUT_ABS=$(realpath -m -- "$OUT")

NPOINTS=0
TODO=()
scan() { # NPOINTS, and TODO: the points neither done nor running
    local idx name state rest
    NPOINTS=0 TODO=()
    while IFS=$'\t' read -r idx name state rest; do
        NPOINTS=$((NPOINTS + 1))
        case $state in
        done | running) ;;
        *) TODO+=("$idx") ;;
        esac
    done < <("$CNN_BIN" sweep state "$OUT_ABS")
}
# The report and every point's state; exit 0 when all are done, else 1.
summarize() { "$CNN_BIN" sweep summary "$OUT_ABS"; }

scan
if ((${#TODO[@]} == 0)); then
    note "nothing to run"
    summarize && exit 0 || exit 1
fi

# ---------------------------------------------------------------- slurm
shown() { # arguments quoted for people: 'a b' rather than a\ b
    local out="" a
    for a in "$@"; do
        if [[ ! $a =~ ^[A-Za-z0-9_./=:,+@%-]+$ ]]; then
            a="'${a//\'/\'\\\'\'}'"
        fi
        out+="${out:+ }$a"
    done
    printf '%s' "$out"
}
compress_ranges() { # sorted indices -> 0-3,5,7-9
    local out="" start="" prev="" i
    for i in "$@"; do
        if [[ -n $prev && $i -eq $((prev + 1)) ]]; then
            prev=$i
            continue
        fi
        [[ -n $start ]] && out+="${out:+,}$start$([[ $prev != "$start" ]] && echo "-$prev")"
        start=$i prev=$i
    done
    [[ -n $start ]] && out+="${out:+,}$start$([[ $prev != "$start" ]] && echo "-$prev")"
    printf '%s' "$out"
}

if ((SLURM)); then
    command -v sbatch >/dev/null || die "--slurm: sbatch is not on PATH (is this a Slurm login node?)"
    mkdir -p "$OUT_ABS/slurm"
    # Tasks of earlier submissions still queued or running are not submitted again.
    if [[ -s $OUT_ABS/slurm/jobs ]] && command -v squeue >/dev/null; then
        mapfile -t queued < <(squeue -h -r -j "$(paste -sd, "$OUT_ABS/slurm/jobs")" -o '%K' 2>/dev/null | grep -E '^[0-9]+$' || true)
        if ((${#queued[@]})); then
            declare -A is_queued=()
            for q in "${queued[@]}"; do is_queued[$q]=1; done
            left=()
            for t in "${TODO[@]}"; do [[ -n ${is_queued[$t]:-} ]] || left+=("$t"); done
            note "${#queued[@]} point(s) already queued or running in Slurm: not submitted again"
            TODO=("${left[@]}")
        fi
    fi
    if ((${#TODO[@]} == 0)); then
        note "nothing to submit: every unfinished point is queued or running"
        exit 0
    fi
    ARRAY=$(compress_ranges "${TODO[@]}")
    [[ -n $JOBS ]] && ARRAY+="%$JOBS"
    if [[ -n $THREADS ]]; then
        threads_line="threads=$THREADS"
    else
        # shellcheck disable=SC2016 # expanded by the task, not here
        threads_line='threads=${SLURM_CPUS_PER_TASK:-1}'
    fi
    job_name=cnn-sweep-$(basename "$OUT_ABS")
    SBATCH=$OUT_ABS/slurm/sweep.sbatch
    {
        printf '#!/bin/bash\n'
        printf '# Written by scripts/sweep.sh: one array task per unfinished point of %s.\n' "$OUT_ABS"
        printf '# Submitted as: sbatch %s %s\n' "$(shown "${SLURM_OPTS[@]}")" "$SBATCH"
        printf '#SBATCH --job-name=%s\n' "${job_name//[^A-Za-z0-9._+-]/_}"
        printf '#SBATCH --array=%s\n' "$ARRAY"
        printf '#SBATCH --output=%s\n' "$OUT_ABS/slurm/%A_%a.out"
        printf '#SBATCH --chdir=%s\n' "$PWD"
        ((RANKS > 1)) && printf '#SBATCH --ntasks=%s\n' "$RANKS"
        printf '%s\n' "$threads_line"
        # shellcheck disable=SC2016 # expanded by the task, not here
        printf 'exec %q --threads "$threads" sweep point %s %q "$SLURM_ARRAY_TASK_ID"\n' \
            "$CNN_BIN" "${POINT_OPTS[*]}" "$OUT_ABS"
    } >"$SBATCH"
    WAIT=0
    for o in "${SLURM_OPTS[@]}"; do [[ $o == --wait || $o == -W ]] && WAIT=1; done
    note "submitting ${#TODO[@]} of $NPOINTS points as a Slurm array ($ARRAY)"
    if ((WAIT)); then
        # sbatch --wait prints the id, then blocks until the array ends.
        sbatch "${SLURM_OPTS[@]}" "$SBATCH" | tee "$OUT_ABS/slurm/last-submit" >&2 || true
        sed -n 's/^Submitted batch job \([0-9]*\).*/\1/p' "$OUT_ABS/slurm/last-submit" >>"$OUT_ABS/slurm/jobs"
        summarize && exit 0 || exit 1
    fi
    out=$(sbatch --parsable "${SLURM_OPTS[@]}" "$SBATCH") || {
        note "sbatch failed (see above); nothing was submitted"
        exit 1
    }
    job=${out%%;*}
    printf '%s\n' "$job" >>"$OUT_ABS/slurm/jobs"
    note "submitted job array $job"
    cat >&2 <<EOF
Follow it with:
  squeue -j $job                    # queued and running tasks
  tail -f $OUT/slurm/${job}_*.out   # their output
  $CNN_BIN report $OUT         # results so far
Cancel with: scancel $job (running points save and stop; re-run this command to resubmit what is unfinished)
EOF
    exit 0
fi

# ---------------------------------------------------------------- parallel
command -v parallel >/dev/null || die "GNU parallel is not installed (Debian: apt-get install parallel)"
CORES=$(nproc 2>/dev/null || echo 1)
# Each point's ranks share its cores.
if [[ -z $JOBS && -z $THREADS ]]; then
    JOBS=1 THREADS=$((CORES / RANKS))
elif [[ -z $JOBS ]]; then
    JOBS=$((CORES / (THREADS * RANKS)))
    ((JOBS >= 1)) || JOBS=1
elif [[ -z $THREADS ]]; then
    THREADS=$((CORES / (JOBS * RANKS)))
fi
((THREADS >= 1)) || THREADS=1
((JOBS * THREADS * RANKS <= CORES)) ||
    note "note: $JOBS jobs × $RANKS rank(s) × $THREADS threads is more than the $CORES cores here"
((${#PARALLEL_OPTS[@]})) && PARALLEL_OPTS+=(--workdir "$PWD")

note "${#TODO[@]} of $NPOINTS points to run, $JOBS at a time with $THREADS thread(s) each → $OUT"

# Ctrl-C reaches only this script (parallel runs in its own session), which
# passes it on once: parallel sends SIGINT to each running point (cnn saves
# and exits 130) and waits up to a minute before SIGTERM and SIGKILL. A
# point parallel was starting at that very moment is not among the jobs it
# stops, so what is left in its session afterwards is stopped here the same
# way (stop_leftovers).
INTERRUPTED=0
PAR_PID=""
LEFT=()
on_signal() {
    INTERRUPTED=1
    if [[ -n $PAR_PID ]]; then
        note "stopping: the running points save their state (Ctrl-C again to stop at once)"
        kill -INT "$PAR_PID" 2>/dev/null || true
    elif ((${#LEFT[@]})); then
        kill -INT "${LEFT[@]}" 2>/dev/null || true # a second signal: cnn stops at once
    fi
}
trap on_signal INT TERM HUP
SETSID=()
command -v setsid >/dev/null && [[ -r /proc/self/stat ]] && SETSID=(setsid)

in_session() { # the live processes of session $1 (Linux /proc/PID/stat)
    local f stat state sid
    for f in /proc/[0-9]*/stat; do
        { read -r stat <"$f"; } 2>/dev/null || continue # gone meanwhile
        stat=${stat##*) } # after the command name, which may hold spaces
        read -r state _ _ sid _ <<<"$stat"
        [[ $sid == "$1" && $state != Z ]] && { f=${f#/proc/} && echo "${f%/stat}"; }
    done
    return 0
}
stop_leftovers() { # SIGINT to what is left in session $1, as parallel does to its jobs
    local sid=$1 pid sig=INT start=$SECONDS first=1
    local -A sent=()
    while :; do # 60 s to save, then SIGTERM, 10 s later SIGKILL
        mapfile -t LEFT < <(in_session "$sid")
        ((${#LEFT[@]})) || break
        ((first)) && note "stopping ${#LEFT[@]} process(es) of a point that was starting"
        first=0
        if [[ $sig == INT ]] && ((SECONDS - start >= 60)); then
            sig=TERM && sent=()
        elif [[ $sig == TERM ]] && ((SECONDS - start >= 70)); then
            sig=KILL && sent=()
        elif [[ $sig == KILL ]] && ((${#sent[@]})); then
            break
        fi
        for pid in "${LEFT[@]}"; do
            [[ -n ${sent[$pid]:-} ]] && continue
            kill -"$sig" "$pid" 2>/dev/null || true
            sent[$pid]=1
        done
        sleep 0.1
    done
    LEFT=()
}
"${SETSID[@]}" parallel --jobs "$JOBS" --line-buffer --joblog "+$OUT_ABS/parallel.joblog" \
    --termseq INT,60000,TERM,10000,KILL,25 "${PARALLEL_OPTS[@]}" \
    -q "$CNN_BIN" --threads "$THREADS" sweep point "${POINT_OPTS[@]}" "$OUT_ABS" {} \
    ::: "${TODO[@]}" </dev/null &
PAR_PID=$!
LAST_PAR=$PAR_PID
while :; do
    wait "$PAR_PID" || true
    kill -0 "$PAR_PID" 2>/dev/null || break
done
PAR_PID=""
if ((INTERRUPTED)); then
    # setsid made parallel the leader of a session of its own: its id.
    ((${#SETSID[@]})) && stop_leftovers "$LAST_PAR"
    # On other hosts, a point outlives its ssh connection while it saves.
    if ((${#PARALLEL_OPTS[@]})); then
        for ((i = 0; i < 40; i++)); do
            busy=$("$CNN_BIN" sweep state "$OUT_ABS" "${TODO[@]}" | cut -f3 | grep -cE '^(running|killed)$' || true)
            ((busy == 0)) && break
            ((i == 0)) && note "waiting up to 20 s for $busy point(s) on other hosts to save their state"
            sleep 0.5
        done
    fi
    summarize || true
    note "interrupted; re-run the same command to resume"
    exit 130
fi
summarize && exit 0 || exit 1
