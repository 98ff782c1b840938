#!/usr/bin/env bash
# bench-distributed.sh -- what `cnn train --distributed mpi` gains on this
# machine: one run as R ranks of T threads (mpirun -n R) against one process
# with R×T threads and one with T, same config, same data, release build with
# --features mpi. For each it reports training images/s (rank 0's epoch time,
# training steps only), the command's wall time, and from CNN_PROFILE the
# time per step spent combining the gradients over the ranks (the chain and
# the broadcast, waiting for the slower ranks included), and checks that the
# networks without batch norm ended with one process's tensors.
#
# Usage:
#   scripts/bench-distributed.sh [--ranks "1 2"] [--threads-per-rank T] [--epochs N]
#                                [--limit-train N] [--out DIR] [CONFIG...]
# Defaults: ranks "1 <cores / T>", T 1, 1 epoch, configs/lenet.json on full
# MNIST (../shared/data/mnist, else CNN_MNIST_DIR) and, when CIFAR-10 is in
# data/cifar10 (scripts/get-cifar10.sh), configs/cifar10-cnn.json on
# --limit-train images of it (default 10000). On a 16-core machine:
#   scripts/bench-distributed.sh --ranks "1 2 4 8" --threads-per-rank 2
# Writes DIR/results.json and prints a Markdown table. Runs as root need
# OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 (set here when root).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cores=$(nproc)
tpr=1 ranks_list="" epochs=1 limit=10000 out="" configs=()
while (($#)); do
    case $1 in
    --ranks) ranks_list=$2; shift 2 ;;
    --threads-per-rank) tpr=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --limit-train) limit=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "bench-distributed.sh: unknown option $1" >&2; exit 2 ;;
    *) configs+=("$1"); shift ;;
    esac
done
[[ -n $ranks_list ]] || ranks_list="1 $((cores / tpr > 1 ? cores / tpr : 2))"
out=${out:-$(mktemp -d /tmp/cnn-bench-distributed.XXXXXX)}
mkdir -p "$out"
command -v mpirun >/dev/null || { echo "mpirun is missing (apt-get install openmpi-bin libopenmpi-dev)" >&2; exit 2; }
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi

mnist=${CNN_MNIST_DIR:-../shared/data/mnist}
if ((${#configs[@]} == 0)); then
    configs=(configs/lenet.json)
    [[ -f data/cifar10/test_batch.bin ]] && configs+=(configs/cifar10-cnn.json)
fi

cargo build --release --features mpi --quiet
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
cnn=$target/release/cnn

data_args() { # the data of a config: CIFAR-10 or MNIST
    if grep -q '"cifar10"' "$1"; then
        echo "--data-dir data/cifar10 --limit-train $limit"
    else
        echo "--data-dir $mnist"
    fi
}

comm_ms() { # ms per step combining gradients, from a CNN_PROFILE table
    awk '/^step: gradients over the ranks/ { printf "%.2f\n", $(NF-2) / $(NF-1) }' "$1" | head -1
}

same_tensors() { python3 scripts/dev/same-tensors.py "$1" "$2" >/dev/null 2>&1 && echo yes || echo no; }

echo "[" >"$out/results.json"
first=1
printf '| config | how | threads in all | train img/s | wall s | combine ms/step | same bits as 1 process |\n'
printf '| --- | --- | ---: | ---: | ---: | ---: | --- |\n'
for config in "${configs[@]}"; do
    name=$(basename "$config" .json)
    # shellcheck disable=SC2207 # words of a fixed, space-free string
    data=($(data_args "$config"))
    common=(train --config "$config" "${data[@]}" --epochs "$epochs" --checkpoint-every 0)
    max_ranks=$(tr ' ' '\n' <<<"$ranks_list" | sort -n | tail -1)
    runs=("process:$tpr:1" "process:$((tpr * max_ranks)):1")
    for r in $ranks_list; do ((r > 1)) && runs+=("ranks:$tpr:$r"); done
    ref=""
    for spec in "${runs[@]}"; do
        IFS=: read -r how threads ranks <<<"$spec"
        dir=$out/$name-$how-$ranks-$threads
        rm -rf "$dir"
        start=$(date +%s.%N)
        if [[ $how == process ]]; then
            CNN_PROFILE=1 "$cnn" --threads "$threads" "${common[@]}" --out "$dir" --quiet 2>"$dir.profile"
            label="1 process × $threads thread(s)"
            total=$threads
        else
            CNN_PROFILE=1 mpirun -n "$ranks" --oversubscribe "$cnn" --threads "$threads" "${common[@]}" \
                --distributed mpi --out "$dir" --quiet 2>"$dir.profile" >/dev/null
            label="$ranks ranks × $threads thread(s)"
            total=$((ranks * threads))
        fi
        wall=$(echo "$(date +%s.%N) - $start" | bc)
        ips=$(python3 -c 'import json,sys; h=json.load(open(sys.argv[1])); print(round(sum(r["images_per_second"] for r in h)/len(h)))' "$dir/history.json")
        comm=$(comm_ms "$dir.profile")
        # The same global batch on any number of ranks: one process's bits
        # without batch norm (the reference is the first run).
        same="—"
        if [[ -z $ref ]]; then
            ref=$dir
        elif [[ $how == process ]] || ! grep -q '"batch_norm' "$config"; then
            same=$(same_tensors "$ref/last.safetensors" "$dir/last.safetensors")
        else
            same="n/a (batch norm: statistics per rank)"
        fi
        printf '| %s | %s | %s | %s | %.1f | %s | %s |\n' "$name" "$label" "$total" "$ips" "$wall" "${comm:-—}" "$same"
        ((first)) || echo "," >>"$out/results.json"
        first=0
        printf '{"config": "%s", "ranks": %s, "threads_per_rank": %s, "train_images_per_second": %s, "wall_seconds": %s, "combine_ms_per_step": %s, "same_bits": "%s"}' \
            "$name" "$ranks" "$threads" "$ips" "$wall" "${comm:-null}" "$same" >>"$out/results.json"
    done
done
echo "]" >>"$out/results.json"
echo
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $cores cores; results: $out/results.json"
