#!/usr/bin/env bash
# sweep.sh -- hyperparameter sweeps of `cnn train`, run by GNU parallel (one
# machine or many over ssh) or as a Slurm job array. We do not schedule
# anything ourselves: this script turns a grid into one `cnn train` command
# per point, writes them down, and hands them to the engine.
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
#                   any machine (a 32-bit LCG in this script).
#
# Running:
#   --jobs N        points run at a time (per host; default 1, or cores / --threads);
#                   with --slurm, at most N array tasks at once (--array=...%N)
#   --threads T     CPU threads per run (default: cores / jobs, at least 1; with
#                   --slurm, the task's --cpus-per-task)
#   --retries N     times a failed point is tried again per sweep run (default 1)
#   -S, --sshlogin LOGINS, --sshloginfile FILE
#                   passed to GNU parallel to run points on other machines; they
#                   need SWEEP_DIR, the base config and the cnn binary at the same
#                   paths (a shared filesystem) and run in the same directory.
#   --cnn PATH      the cnn binary (default: $CNN, else target/release/cnn of this
#                   repository, else cnn on PATH)
#   --dry-run       write the manifest and print the commands; run nothing
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
#   commands.tsv    the same commands, shell-quoted, for bin/point.sh
#   runs/NAME/      one `cnn train` run directory per point, NAME from the varied
#                   values (lr=0.001,batch_size=64); its config.json is the resolved config
#   bin/point.sh    the runner (scripts/sweep-point.sh) every engine calls per point
#   logs/NAME.log   cnn's output; sweep.log: every start, resume, retry and skip;
#   parallel.joblog GNU parallel's job log; slurm/: sweep.sbatch, job ids, task output
#
# Re-running the same command resumes: done points are skipped, killed or
# interrupted ones continue from their last checkpoint (cnn train --resume),
# failed ones are retried (--retries) and then reported. Ctrl-C asks every
# running point to save and stop (cnn exits 130) and then exits 130.
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
BASE="" OUT="" JOBS="" THREADS="" RANDOM_K="" SEED=0 RETRIES=1 DRY_RUN=0
CNN_BIN=${CNN:-}
SLURM=0
SLURM_OPTS=() PARALLEL_OPTS=() AXES=() EXTRA=()

# A grid axis: a config path (a.b.0.c or a.b[0].c) then `=`.
is_axis() { [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*((\.[A-Za-z0-9_]+)|(\[[0-9]+\]))*= ]]; }
is_count() { [[ $1 =~ ^[0-9]+$ ]] && (($1 < 1000000000)); }

while (($#)); do
    # --option=value for our own options
    case $1 in
    --base=* | --out=* | --jobs=* | --threads=* | --random=* | --seed=* | --retries=* | --cnn=* | --sshlogin=* | --sshloginfile=*)
        set -- "${1%%=*}" "${1#*=}" "${@:2}"
        ;;
    esac
    case $1 in
    --base | --out | --jobs | -j | --threads | --random | --seed | --retries | --cnn | -S | --sshlogin | --sshloginfile)
        (($# >= 2)) || die "$1 needs a value; see --help"
        ;;
    esac
    case $1 in
    -h | --help) usage; exit 0 ;;
    --base) BASE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --jobs | -j) JOBS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --random) RANDOM_K=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --retries) RETRIES=$2; shift 2 ;;
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
    *)
        is_axis "$1" || die "$1: expected KEY=V1,V2,... with KEY a config path such as training.optimizer.lr"
        AXES+=("$1")
        shift
        ;;
    esac
done

[[ -n $BASE ]] || die "--base CONFIG is required: the config every point starts from"
[[ -n $OUT ]] || die "--out SWEEP_DIR is required: the directory that receives the runs"
[[ -f $BASE ]] || die "--base $BASE: no such file"
((${#AXES[@]})) || die "give at least one grid axis, e.g. training.optimizer.lr=0.001,0.0005,0.01"
[[ -z $JOBS ]] || { is_count "$JOBS" && ((JOBS >= 1)); } || die "--jobs $JOBS: expected a whole number of at least 1"
[[ -z $THREADS ]] || { is_count "$THREADS" && ((THREADS >= 1)); } || die "--threads $THREADS: expected a whole number of at least 1"
is_count "$RETRIES" || die "--retries $RETRIES: expected a whole number (0 for no retries)"
is_count "$SEED" || die "--seed $SEED: expected a whole number"
[[ -z $RANDOM_K ]] || { is_count "$RANDOM_K" && ((RANDOM_K >= 1)); } || die "--random $RANDOM_K: expected a whole number of points, at least 1"
if ((SLURM)) && ((${#PARALLEL_OPTS[@]})); then
    die "--sshlogin and --slurm do not mix: Slurm places the tasks itself"
fi
for a in "${AXES[@]}" "${EXTRA[@]}"; do
    [[ $a != *[[:cntrl:]]* ]] || die "arguments may not contain control characters (tabs, newlines): $(printf %q "$a")"
done
for a in "${EXTRA[@]}"; do
    case $a in
    --out | --out=* | -o | --config | --config=* | -c | --resume | --resume=* | --force)
        die "$a after --: the sweep sets --config, --out, --resume and --force of each run itself" ;;
    --threads | --threads=*)
        die "$a after --: give sweep.sh --threads T instead (it also picks the number of jobs)" ;;
    esac
done

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

# ---------------------------------------------------------------- axes
# Splits V1,V2,... on commas outside brackets, braces and double quotes.
split_values() {
    local s=$1 cur="" depth=0 quoted=0 c i
    VALUES=()
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        if ((quoted)); then
            [[ $c == '"' ]] && quoted=0
        else
            case $c in
            '"') quoted=1 ;;
            '[' | '{') depth=$((depth + 1)) ;;
            ']' | '}') depth=$((depth - 1)) ;;
            ',')
                if ((depth == 0)); then
                    VALUES+=("$cur")
                    cur=""
                    continue
                fi
                ;;
            esac
        fi
        cur+=$c
    done
    VALUES+=("$cur")
}

KEYS=()          # axis i: its config path
declare -A AV=() # AV[i,j]: value j of axis i
AXIS_LEN=()
declare -A seen_key=()
for a in "${AXES[@]}"; do
    key=${a%%=*}
    [[ -z ${seen_key[$key]:-} ]] || die "$key is given twice; list all its values in one axis: $key=V1,V2,..."
    seen_key[$key]=1
    split_values "${a#*=}"
    declare -A seen_value=()
    for v in "${VALUES[@]}"; do
        [[ -n $v ]] || die "$a: empty value; write $key=V1,V2,... without empty entries"
        [[ -z ${seen_value[$v]:-} ]] || die "$a: $v is listed twice"
        seen_value[$v]=1
    done
    unset seen_value
    for j in "${!VALUES[@]}"; do
        AV[${#KEYS[@]},$j]=${VALUES[j]}
    done
    KEYS+=("$key")
    AXIS_LEN+=("${#VALUES[@]}")
done
NAXES=${#KEYS[@]}

GRID=1
for n in "${AXIS_LEN[@]}"; do
    GRID=$((GRID * n))
    ((GRID <= 100000000)) || die "the grid has more than 100,000,000 points; use fewer values or fewer axes"
done
if [[ -n $RANDOM_K ]]; then
    ((RANDOM_K <= GRID)) || die "--random $RANDOM_K: the grid has only $GRID points; ask for at most $GRID"
    NPOINTS=$RANDOM_K
else
    ((GRID <= 100000)) || die "the grid has $GRID points; that is too many runs: use --random K to draw K of them"
    NPOINTS=$GRID
fi

# Short labels for names: the shortest common number of trailing path
# segments that tells the varied axes apart (lr, batch_size; 1.out_features).
VARIED=()
for ((i = 0; i < NAXES; i++)); do
    ((AXIS_LEN[i] > 1)) && VARIED+=("$i")
done
((${#VARIED[@]})) || mapfile -t VARIED < <(seq 0 $((NAXES - 1)))
LABELS=()
for ((depth = 1; ; depth++)); do
    declare -A seen_label=()
    unique=1 longest=1
    for ((i = 0; i < NAXES; i++)); do
        IFS=. read -r -a segs <<<"$(sed -e 's/\[/./g' -e 's/\]//g' <<<"${KEYS[i]}")"
        ((${#segs[@]} > longest)) && longest=${#segs[@]}
        from=$((${#segs[@]} > depth ? ${#segs[@]} - depth : 0))
        label=$(IFS=.; echo "${segs[*]:from}")
        LABELS[i]=$label
    done
    for i in "${VARIED[@]}"; do
        [[ -n ${seen_label[${LABELS[i]}]:-} ]] && unique=0
        seen_label[${LABELS[i]}]=1
    done
    unset seen_label
    ((unique || depth >= longest)) && break
done

# ---------------------------------------------------------------- points
# The grid in mixed radix, the first axis varying slowest.
POINT_GRID=() # point p: its index in the full grid
if [[ -n $RANDOM_K ]]; then
    # A partial Fisher-Yates shuffle of 0..GRID-1 (sparse), driven by a
    # 32-bit LCG (Numerical Recipes constants), then sorted: the same seed
    # gives the same points everywhere.
    state=$(((SEED ^ (SEED >> 32)) & 0xffffffff))
    draw() { # sets R to a number in [0, $1)
        state=$(((1664525 * state + 1013904223) & 0xffffffff))
        local hi=$((state >> 8))
        state=$(((1664525 * state + 1013904223) & 0xffffffff))
        R=$((((hi << 24) | (state >> 8)) % $1))
    }
    declare -A perm=()
    for ((i = 0; i < RANDOM_K; i++)); do
        draw $((GRID - i))
        j=$((i + R))
        vi=${perm[$i]:-$i}
        vj=${perm[$j]:-$j}
        perm[$i]=$vj
        perm[$j]=$vi
        POINT_GRID+=("$vj")
    done
    mapfile -t POINT_GRID < <(printf '%s\n' "${POINT_GRID[@]}" | sort -n)
else
    mapfile -t POINT_GRID < <(seq 0 $((GRID - 1)))
fi

sanitize() { # a value as a file-name part
    local v=$1
    v=${v//[^A-Za-z0-9._+-]/_}
    printf '%s' "$v"
}
json_str() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

# Per point: its values (one per axis), name and `cnn train` arguments.
declare -A seen_name=()
P_NAMES=() P_VALUES=()
for ((p = 0; p < NPOINTS; p++)); do
    g=${POINT_GRID[p]}
    vals=()
    for ((i = NAXES - 1; i >= 0; i--)); do
        vals[i]=${AV[$i,$((g % AXIS_LEN[i]))]}
        g=$((g / AXIS_LEN[i]))
    done
    parts=()
    for i in "${VARIED[@]}"; do
        parts+=("${LABELS[i]}=$(sanitize "${vals[i]}")")
    done
    name=$(IFS=,; echo "${parts[*]}")
    ((${#name} <= 200)) || name="p$p-${name:0:180}"
    [[ -z ${seen_name[$name]:-} ]] || name="$name-$p"
    seen_name[$name]=1
    P_NAMES+=("$name")
    P_VALUES+=("$(printf '%s\n' "${vals[@]}")")
done

# ---------------------------------------------------------------- commands
OUT_ABS=$(realpath -m -- "$OUT")
BASE_ABS=$(realpath -- "$BASE")
BASE_SHA=$(sha256sum "$BASE_ABS" | cut -d' ' -f1)

# --resume takes only the flags that do not change a run; keep those of EXTRA.
RESUME_EXTRA=()
for ((i = 0; i < ${#EXTRA[@]}; i++)); do
    case ${EXTRA[i]} in
    --device | --data-dir | --epochs | --checkpoint-every)
        RESUME_EXTRA+=("${EXTRA[i]}" "${EXTRA[i + 1]:-}")
        i=$((i + 1))
        ;;
    --device=* | --data-dir=* | --epochs=* | --checkpoint-every=* | -q | --quiet)
        RESUME_EXTRA+=("${EXTRA[i]}")
        ;;
    esac
done

fresh_args() { # point -> FRESH_ARGS
    local p=$1 i
    mapfile -t vals <<<"${P_VALUES[p]}"
    FRESH_ARGS=(train --config "$BASE_ABS")
    for ((i = 0; i < NAXES; i++)); do
        FRESH_ARGS+=(--set "${KEYS[i]}=${vals[i]}")
    done
    FRESH_ARGS+=(--out "$OUT_ABS/runs/${P_NAMES[p]}" "${EXTRA[@]}")
}
quoted() { printf '%q ' "$@" | sed 's/ $//'; }
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

write_manifest() { # FILE
    local p i sep
    {
        printf '{\n  "format": 1,\n'
        printf '  "base": %s,\n' "$(json_str "$BASE_ABS")"
        printf '  "base_sha256": "%s",\n' "$BASE_SHA"
        printf '  "axes": [\n'
        for ((i = 0; i < NAXES; i++)); do
            printf '    {"key": %s, "values": [' "$(json_str "${KEYS[i]}")"
            sep=""
            for ((j = 0; j < AXIS_LEN[i]; j++)); do
                printf '%s%s' "$sep" "$(json_str "${AV[$i,$j]}")"
                sep=", "
            done
            printf ']}%s\n' "$( ((i < NAXES - 1)) && echo ,)"
        done
        printf '  ],\n'
        if [[ -n $RANDOM_K ]]; then
            printf '  "random": {"points": %s, "seed": %s, "grid_points": %s},\n' "$RANDOM_K" "$SEED" "$GRID"
        else
            printf '  "random": null,\n'
        fi
        printf '  "extra": ['
        sep=""
        for a in "${EXTRA[@]}"; do
            printf '%s%s' "$sep" "$(json_str "$a")"
            sep=", "
        done
        printf '],\n  "points": [\n'
        for ((p = 0; p < NPOINTS; p++)); do
            mapfile -t vals <<<"${P_VALUES[p]}"
            printf '    {\n      "index": %s,\n      "name": %s,\n      "dir": %s,\n      "params": {' \
                "$p" "$(json_str "${P_NAMES[p]}")" "$(json_str "runs/${P_NAMES[p]}")"
            sep=""
            for ((i = 0; i < NAXES; i++)); do
                printf '%s%s: %s' "$sep" "$(json_str "${KEYS[i]}")" "$(json_str "${vals[i]}")"
                sep=", "
            done
            printf '},\n'
            fresh_args "$p"
            printf '      "command": %s\n' "$(json_str "cnn $(shown "${FRESH_ARGS[@]}")")"
            printf '    }%s\n' "$( ((p < NPOINTS - 1)) && echo ,)"
        done
        printf '  ]\n}\n'
    } >"$1"
}

# The sweep's identity: the manifest without the commands (which hold
# absolute paths, so that moving SWEEP_DIR does not make it another sweep).
identity() { grep -v '^      "command": ' "$1"; }

# ---------------------------------------------------------------- checks
if [[ -e $OUT_ABS && ! -d $OUT_ABS ]]; then
    die "--out $OUT exists and is not a directory"
fi
TMP_MANIFEST=$(mktemp)
trap 'rm -f "$TMP_MANIFEST"' EXIT
write_manifest "$TMP_MANIFEST"
if [[ -f $OUT_ABS/manifest.json ]]; then
    if ! cmp -s <(identity "$OUT_ABS/manifest.json") <(identity "$TMP_MANIFEST"); then
        {
            printf 'sweep.sh: %s holds a different sweep; refusing to mix their runs.\n' "$OUT"
            printf 'Its manifest.json (-) and this command (+) differ:\n'
            diff -u <(identity "$OUT_ABS/manifest.json") <(identity "$TMP_MANIFEST") | sed -n '3,40p' || true
            printf 'Re-run with the arguments in %s/manifest.json to continue that sweep, or choose a new --out.\n' "$OUT"
        } >&2
        exit 2
    fi
elif [[ -d $OUT_ABS && -n $(ls -A "$OUT_ABS") ]]; then
    die "--out $OUT is not empty and has no manifest.json, so it is not a sweep directory; choose a new --out"
fi

# Each point must be a valid config before anything runs (cnn summary reads
# the config and --set values without touching data).
SUMMARY_SETS=()
for ((i = 0; i < ${#EXTRA[@]}; i++)); do
    case ${EXTRA[i]} in
    --set) SUMMARY_SETS+=(--set "${EXTRA[i + 1]:-}"); i=$((i + 1)) ;;
    --set=*) SUMMARY_SETS+=("${EXTRA[i]}") ;;
    esac
done
for ((p = 0; p < NPOINTS; p++)); do
    fresh_args "$p"
    mapfile -t vals <<<"${P_VALUES[p]}"
    sets=()
    for ((i = 0; i < NAXES; i++)); do
        sets+=(--set "${KEYS[i]}=${vals[i]}")
    done
    if ! err=$("$CNN_BIN" summary --config "$BASE_ABS" "${sets[@]}" "${SUMMARY_SETS[@]}" 2>&1 >/dev/null); then
        printf 'sweep.sh: point %s (%s) is not a valid config:\n%s\nNothing was run.\n' \
            "$p" "${P_NAMES[p]}" "  ${err//$'\n'/$'\n'  }" >&2
        exit 2
    fi
done
# The extra arguments must parse as cnn train flags (clap stops at --help).
fresh_args 0
if ! err=$("$CNN_BIN" "${FRESH_ARGS[@]}" --help 2>&1 >/dev/null); then
    printf 'sweep.sh: the arguments after -- are not valid for cnn train:\n%s\nNothing was run.\n' \
        "  ${err//$'\n'/$'\n'  }" >&2
    exit 2
fi

# ---------------------------------------------------------------- write
mkdir -p "$OUT_ABS/runs" "$OUT_ABS/bin" "$OUT_ABS/logs" "$OUT_ABS/locks"
mv "$TMP_MANIFEST" "$OUT_ABS/manifest.json"
{
    printf 'index\tname\tfresh\tresume\n'
    for ((p = 0; p < NPOINTS; p++)); do
        fresh_args "$p"
        printf '%s\t%s\t%s\t%s\n' "$p" "${P_NAMES[p]}" "$(quoted "${FRESH_ARGS[@]}")" \
            "$(quoted train --resume "$OUT_ABS/runs/${P_NAMES[p]}" "${RESUME_EXTRA[@]}")"
    done
} >"$OUT_ABS/commands.tsv.tmp"
mv "$OUT_ABS/commands.tsv.tmp" "$OUT_ABS/commands.tsv"
cp "$SCRIPT_DIR/sweep-point.sh" "$OUT_ABS/bin/point.sh.tmp"
chmod +x "$OUT_ABS/bin/point.sh.tmp"
mv "$OUT_ABS/bin/point.sh.tmp" "$OUT_ABS/bin/point.sh"
POINT=$OUT_ABS/bin/point.sh

join() { # SEPARATOR WORDS...
    local sep=$1 out=$2
    shift 2
    for w in "$@"; do out+=$sep$w; done
    printf '%s' "$out"
}
describe_axes() {
    local parts=() i
    for i in "${VARIED[@]}"; do parts+=("${LABELS[i]} (${AXIS_LEN[i]})"); done
    join ' × ' "${parts[@]}"
}

if ((DRY_RUN)); then
    note "$NPOINTS points over $(describe_axes)${RANDOM_K:+, drawn from $GRID with seed $SEED}; manifest: $OUT/manifest.json"
    for ((p = 0; p < NPOINTS; p++)); do
        fresh_args "$p"
        printf '%s\t%s\t%s\n' "$p" "${P_NAMES[p]}" "$(shown "$CNN_BIN" "${FRESH_ARGS[@]}")"
    done
    exit 0
fi

# ---------------------------------------------------------------- state
declare -A COUNT=()
TODO=()
FAILED_LINES=()
scan() { # fills TODO (indices not done and not running) and COUNT
    local idx name state msg
    TODO=() FAILED_LINES=()
    COUNT=()
    while IFS=$'\t' read -r idx name state msg; do
        COUNT[$state]=$((${COUNT[$state]:-0} + 1))
        case $state in
        done | running) ;;
        *) TODO+=("$idx") ;;
        esac
        case $state in
        failed | unreadable) FAILED_LINES+=("$(printf '  %-7s %s: %s (log: %s)' "$state" "$name" "$msg" "$OUT/logs/$name.log")") ;;
        running) FAILED_LINES+=("$(printf '  %-7s %s: %s' "$state" "$name" "$msg")") ;;
        esac
    done < <("$POINT" --state "$OUT_ABS")
}
counts() {
    local s parts=()
    for s in "done" running failed killed interrupted unreadable new; do
        [[ -n ${COUNT[$s]:-} ]] && parts+=("${COUNT[$s]} ${s/new/not started}")
    done
    join ', ' "${parts[@]}"
}

# Prints the report and the failures; returns the sweep's exit status.
summarize() {
    scan
    "$CNN_BIN" report "$OUT_ABS" || true
    note "$NPOINTS points: $(counts)"
    ((${#FAILED_LINES[@]} == 0)) || printf '%s\n' "${FAILED_LINES[@]}" >&2
    if ((${COUNT[done]:-0} == NPOINTS)); then
        return 0
    fi
    note "re-run the same command to resume the unfinished points and retry the failed ones"
    return 1
}

scan
if ((${#TODO[@]} == 0)); then
    note "nothing to run: $(counts)"
    summarize && exit 0 || exit 1
fi

# ---------------------------------------------------------------- slurm
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
    SBATCH=$OUT_ABS/slurm/sweep.sbatch
    {
        printf '#!/bin/bash\n'
        printf '# Written by scripts/sweep.sh: one array task per unfinished point of %s.\n' "$OUT_ABS"
        printf '# Submitted as: sbatch %s %s\n' "$(shown "${SLURM_OPTS[@]}")" "$SBATCH"
        printf '#SBATCH --job-name=%s\n' "cnn-sweep-$(sanitize "$(basename "$OUT_ABS")")"
        printf '#SBATCH --array=%s\n' "$ARRAY"
        printf '#SBATCH --output=%s\n' "$OUT_ABS/slurm/%A_%a.out"
        printf '#SBATCH --chdir=%s\n' "$PWD"
        printf '%s\n' "$threads_line"
        # shellcheck disable=SC2016 # expanded by the task, not here
        printf 'exec %s --cnn %s --threads "$threads" --retries %s %s "$SLURM_ARRAY_TASK_ID"\n' \
            "$(quoted "$POINT")" "$(quoted "$CNN_BIN")" "$RETRIES" "$(quoted "$OUT_ABS")"
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
if [[ -z $JOBS && -z $THREADS ]]; then
    JOBS=1 THREADS=$CORES
elif [[ -z $JOBS ]]; then
    JOBS=$((CORES / THREADS))
    ((JOBS >= 1)) || JOBS=1
elif [[ -z $THREADS ]]; then
    THREADS=$((CORES / JOBS))
    ((THREADS >= 1)) || THREADS=1
fi
((JOBS * THREADS <= CORES)) || note "note: $JOBS jobs × $THREADS threads is more than the $CORES cores here"
((${#PARALLEL_OPTS[@]})) && PARALLEL_OPTS+=(--workdir "$PWD")

note "$NPOINTS points over $(describe_axes): ${#TODO[@]} to run, ${COUNT[done]:-0} done; $JOBS at a time with $THREADS thread(s) each → $OUT"

# Ctrl-C reaches only this script (parallel runs in its own session), which
# passes it on once: parallel sends SIGINT to each running point (cnn saves
# and exits 130) and waits up to a minute before SIGTERM and SIGKILL.
INTERRUPTED=0
PAR_PID=""
on_signal() {
    INTERRUPTED=1
    if [[ -n $PAR_PID ]]; then
        note "stopping: the running points save their state (Ctrl-C again to stop at once)"
        kill -INT "$PAR_PID" 2>/dev/null || true
    fi
}
trap on_signal INT TERM HUP
SETSID=()
command -v setsid >/dev/null && SETSID=(setsid)
"${SETSID[@]}" parallel --jobs "$JOBS" --line-buffer --joblog "+$OUT_ABS/parallel.joblog" \
    --termseq INT,60000,TERM,10000,KILL,25 "${PARALLEL_OPTS[@]}" \
    -q "$POINT" --cnn "$CNN_BIN" --threads "$THREADS" --retries "$RETRIES" "$OUT_ABS" {} \
    ::: "${TODO[@]}" </dev/null &
PAR_PID=$!
while :; do
    wait "$PAR_PID" || true
    kill -0 "$PAR_PID" 2>/dev/null || break
done
PAR_PID=""
if ((INTERRUPTED)); then
    # On other hosts, a point outlives its ssh connection while it saves.
    if ((${#PARALLEL_OPTS[@]})); then
        for ((i = 0; i < 40; i++)); do
            busy=$("$POINT" --state "$OUT_ABS" "${TODO[@]}" | cut -f3 | grep -cE '^(running|killed)$' || true)
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
