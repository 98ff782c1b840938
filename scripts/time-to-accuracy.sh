#!/usr/bin/env bash
# time-to-accuracy.sh -- how long a recipe takes to reach its accuracy, over
# several seeds, here and (optionally) in PyTorch on the same machine.
#
#   scripts/time-to-accuracy.sh RECIPE [--seeds N] [--data-dir DIR] [--threads T]
#                               [--torch] [--out DIR] [-- EXTRA CNN TRAIN ARGS]
#
# For each seed 1..N: `cnn train --config RECIPE --seed S` from start to exit
# (reading the data, every epoch and the final test pass included), timed as
# wall-clock seconds; the test accuracy is the run's final one (the model the
# run ends with: with EMA, the averaged weights). It prints one markdown table:
# seed, wall seconds, test accuracy, then the mean ± standard deviation. With
# --torch, the same recipe in PyTorch (scripts/torch_reference.py, the venv of
# scripts/dev/torch-venv.sh) for the same seeds, in columns beside cnn's.
#
# Build first (cargo build --release); run on a quiet machine. Not part of CI
# (a CI test trains each recipe on a few hundred images to keep them valid).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die() { printf 'time-to-accuracy.sh: %s\n' "$*" >&2; exit 2; }

recipe="" seeds=3 data_dir="" threads=2 torch=0 out="" extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seeds) seeds=$2; shift 2 ;;
        --data-dir) data_dir=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --torch) torch=1; shift ;;
        --out) out=$2; shift 2 ;;
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
[ "$torch" = 0 ] || [ -n "$data_dir" ] || die "--torch needs --data-dir (the PyTorch reference has no default data location)"
cnn=${CNN:-target/release/cnn}
[ -x "$cnn" ] || die "no $cnn: cargo build --release first (or set CNN)"
out=${out:-$(mktemp -d -t tta.XXXXXX)}
mkdir -p "$out"
python=${CNN_TORCH_VENV:-.venv-torch}/bin/python
data_args=()
[ -n "$data_dir" ] && data_args=(--data-dir "$data_dir")
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads
log() { printf '[tta] %s\n' "$*" >&2; }

rows=()
for seed in $(seq 1 "$seeds"); do
    run=$out/cnn-seed-$seed
    log "cnn, seed $seed"
    start=$(date +%s.%N)
    "$cnn" --threads "$threads" train --config "$recipe" --seed "$seed" --out "$run" --quiet \
        "${data_args[@]}" "${extra[@]}"
    end=$(date +%s.%N)
    acc=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[-1]["test_acc"])' "$run/history.json")
    t_acc="" t_secs=""
    if [ "$torch" = 1 ]; then
        [ -x "$python" ] || scripts/dev/torch-venv.sh >&2
        log "PyTorch, seed $seed"
        tstart=$(date +%s.%N)
        "$python" scripts/torch_reference.py train --config "$recipe" --seed "$seed" --threads "$threads" \
            --epochs "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("training", {}).get("epochs", 10))' "$recipe")" \
            ${data_dir:+--data-dir "$data_dir"} --json > "$out/torch-seed-$seed.json"
        tend=$(date +%s.%N)
        t_acc=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["test_acc"])' "$out/torch-seed-$seed.json")
        t_secs=$(python3 -c "print($tend - $tstart)")
    fi
    rows+=("$seed $(python3 -c "print($end - $start)") $acc $t_secs $t_acc")
done

printf '%s\n' "${rows[@]}" | python3 -c '
import statistics as st, sys
rows = [l.split() for l in sys.stdin if l.strip()]
torch = len(rows[0]) > 3
head = "| seed | cnn wall s | cnn test acc |" + (" PyTorch wall s | PyTorch test acc |" if torch else "")
print(head)
print("| ---: | ---: | ---: |" + (" ---: | ---: |" if torch else ""))
for r in rows:
    line = f"| {r[0]} | {float(r[1]):.1f} | {100 * float(r[2]):.2f}% |"
    if torch:
        line += f" {float(r[3]):.1f} | {100 * float(r[4]):.2f}% |"
    print(line)
def ms(xs, pct=False):
    xs = [float(x) * (100 if pct else 1) for x in xs]
    sd = st.stdev(xs) if len(xs) > 1 else 0.0
    unit = "%" if pct else " s"
    return f"{st.mean(xs):.2f} ± {sd:.2f}{unit}"
line = f"| mean ± std | {ms([r[1] for r in rows])} | {ms([r[2] for r in rows], True)} |"
if torch:
    line += f" {ms([r[3] for r in rows])} | {ms([r[4] for r in rows], True)} |"
print(line)
'
log "runs in $out"
