#!/usr/bin/env bash
# time-to-accuracy.sh -- how long a recipe takes to reach its accuracy, over
# several seeds, here and (optionally) in PyTorch on the same machine.
#
#   scripts/time-to-accuracy.sh RECIPE [--seeds N] [--data-dir DIR] [--threads T]
#                               [--torch] [--out DIR] [--report]
#                               [-- EXTRA CNN TRAIN ARGS]
#
# For each seed 1..N: `cnn train --config RECIPE --seed S` from start to exit
# (reading the data, every epoch and the final test pass included), timed as
# wall-clock seconds; the test accuracy is the run's final one (the model the
# run ends with: with EMA, the averaged weights). It prints one markdown table:
# seed, wall seconds, test accuracy, then the mean ± standard deviation. With
# --torch, the same recipe in PyTorch (scripts/torch_reference.py, the venv of
# scripts/dev/torch-venv.sh) for the same seeds, in columns beside cnn's.
#
# Every cnn seed runs first, then every PyTorch seed. Each finished run leaves
# its wall time in OUT (cnn-seed-S.secs, torch-seed-S.secs beside the run), so
# running the same command again with the same --out skips what is measured
# and goes on with the rest: a long measurement can be stopped and continued
# (an unfinished run is moved aside to NAME.partial-TIME, never reused).
# --report runs nothing and prints the table of what OUT holds ("—" for runs
# not made yet; the means are over the runs made).
#
# Build first (cargo build --release); run on a quiet machine. Not part of CI
# (a CI test trains each recipe on a few hundred images to keep them valid).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die() { printf 'time-to-accuracy.sh: %s\n' "$*" >&2; exit 2; }

recipe="" seeds=3 data_dir="" threads=2 torch=0 out="" report=0 extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seeds) seeds=$2; shift 2 ;;
        --data-dir) data_dir=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --torch) torch=1; shift ;;
        --out) out=$2; shift 2 ;;
        --report) report=1; shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $1 (try --help)" ;;
        *) [ -z "$recipe" ] || die "one RECIPE only"; recipe=$1; shift ;;
    esac
done
[ -n "$recipe" ] || die "give a RECIPE config (try --help)"
[ -f "$recipe" ] || die "no such recipe: $recipe"
[[ $seeds =~ ^[1-9][0-9]*$ ]] || die "--seeds takes a positive number"
# cnn finds the datasets in its default places; the PyTorch reference must be told.
[ "$torch" = 0 ] || [ "$report" = 1 ] || [ -n "$data_dir" ] || die "--torch needs --data-dir (the PyTorch reference has no default data location)"
cnn=${CNN:-target/release/cnn}
[ "$report" = 1 ] || [ -x "$cnn" ] || die "no $cnn: cargo build --release first (or set CNN)"
[ "$report" = 0 ] || [ -d "$out" ] || die "--report needs the --out DIR of an earlier measurement"
out=${out:-$(mktemp -d -t tta.XXXXXX)}
mkdir -p "$out"
python=${CNN_TORCH_VENV:-.venv-torch}/bin/python
data_args=()
[ -n "$data_dir" ] && data_args=(--data-dir "$data_dir")
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads
log() { printf '[tta] %s\n' "$*" >&2; }

# A run counts as measured once its .secs file exists (written after the run
# exits successfully); anything else under its name is an unfinished run.
measured() { [ -f "$out/$1.secs" ]; }
set_aside() {
    local stale
    for stale in "$out/$1" "$out/$1.json"; do
        if [ -e "$stale" ]; then
            log "moving the unfinished $(basename "$stale") aside"
            mv "$stale" "$stale.partial-$(date +%Y%m%dT%H%M%S)"
        fi
    done
}
secs_since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$(date +%s.%N)"; }

# measure LABEL NAME SEED COMMAND...: runs and times COMMAND unless NAME is measured.
measure() {
    local label=$1 name=$2 seed=$3 start
    shift 3
    if measured "$name"; then
        log "$label, seed $seed: measured already ($(cat "$out/$name.secs") s)"
        return
    fi
    set_aside "$name"
    log "$label, seed $seed"
    start=$(date +%s.%N)
    "$@"
    secs_since "$start" > "$out/$name.secs"
}
cnn_run() {
    "$cnn" --threads "$threads" train --config "$recipe" --seed "$1" --out "$out/cnn-seed-$1" --quiet \
        "${data_args[@]}" "${extra[@]}"
}
torch_run() {
    "$python" scripts/torch_reference.py train --config "$recipe" --seed "$1" --threads "$threads" \
        --epochs "$epochs" ${data_dir:+--data-dir "$data_dir"} --json > "$out/torch-seed-$1.json.tmp"
    mv "$out/torch-seed-$1.json.tmp" "$out/torch-seed-$1.json"
}

if [ "$report" = 0 ]; then
    for seed in $(seq 1 "$seeds"); do
        measure cnn "cnn-seed-$seed" "$seed" cnn_run "$seed"
    done
    if [ "$torch" = 1 ]; then
        [ -x "$python" ] || scripts/dev/torch-venv.sh >&2
        epochs=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("training", {}).get("epochs", 10))' "$recipe")
        for seed in $(seq 1 "$seeds"); do
            measure PyTorch "torch-seed-$seed" "$seed" torch_run "$seed"
        done
    fi
fi

rows=()
for seed in $(seq 1 "$seeds"); do
    row="$seed - - - -"
    if measured "cnn-seed-$seed"; then
        acc=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[-1]["test_acc"])' "$out/cnn-seed-$seed/history.json")
        row="$seed $(cat "$out/cnn-seed-$seed.secs") $acc - -"
    fi
    if measured "torch-seed-$seed"; then
        t_acc=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["test_acc"])' "$out/torch-seed-$seed.json")
        row="${row% - -} $(cat "$out/torch-seed-$seed.secs") $t_acc"
    fi
    rows+=("$row")
done
torch_cols=$torch
ls "$out"/torch-seed-*.secs >/dev/null 2>&1 && torch_cols=1

printf '%s\n' "${rows[@]}" | python3 -c '
import statistics as st, sys
torch = sys.argv[1] == "1"
rows = [l.split() for l in sys.stdin if l.strip()]
def cell(x, pct=False):
    if x == "-":
        return "—"
    return f"{100 * float(x):.2f}%" if pct else f"{float(x):.1f}"
def ms(xs, pct=False):
    xs = [float(x) * (100 if pct else 1) for x in xs if x != "-"]
    if not xs:
        return "—"
    sd = st.stdev(xs) if len(xs) > 1 else 0.0
    unit = "%" if pct else " s"
    n = "" if len(xs) == len(rows) else f" (n={len(xs)})"
    return f"{st.mean(xs):.2f} ± {sd:.2f}{unit}{n}"
cols = [1, 2] + ([3, 4] if torch else [])
print("| seed | cnn wall s | cnn test acc |" + (" PyTorch wall s | PyTorch test acc |" if torch else ""))
print("| ---: | ---: | ---: |" + (" ---: | ---: |" if torch else ""))
for r in rows:
    print("| " + " | ".join([r[0]] + [cell(r[c], c % 2 == 0) for c in cols]) + " |")
print("| mean ± std | " + " | ".join(ms([r[c] for r in rows], c % 2 == 0) for c in cols) + " |")
' "$torch_cols"
log "runs in $out"
