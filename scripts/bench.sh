#!/usr/bin/env bash
# Side-by-side training benchmark: cnn against PyTorch on the same machine.
#
#   scripts/bench.sh [--data-dir DIR] [--cifar-dir DIR] [--cifar-images N] [--threads N]
#                    [--models "lenet three-conv oneconv cifar10-cnn"] [--out DIR] [--skip-torch]
#                    [--cnn PATH]
#
# For each model, one epoch with N threads each (default 2), batch size,
# optimizer, schedule and augmentation from the config:
#   * the seed models (lenet, three-conv, oneconv): full MNIST (50,000
#     training images after the 10,000-image validation split; batch 64, Adam
#     1e-3), from --data-dir (default ../shared/data/mnist);
#   * cifar10-cnn (and any config whose data.dataset is cifar10, such as
#     resnet20-cifar10): the first --cifar-images (default 10,000) of CIFAR-10's
#     45,000 training images left after the 5,000-image validation split
#     (batch 128, AdamW 2e-3, the 1-epoch warm-up shortened to half the
#     epoch, random crop and flip), tested on the 10,000 test images, from
#     --cifar-dir (default ../data/cifar10; scripts/get-cifar10.sh fetches it).
# Both sides:
#   * cnn:     cnn train built here in release (in cargo's target directory,
#              or --cnn PATH, not built), then cnn eval of the test set;
#   * PyTorch: scripts/torch_reference.py, which builds the model from the same
#              configs/*.json (venv from scripts/dev/torch-venv.sh, made if absent:
#              a 4 GB CPU-usable install of PyPI's torch).
# It prints one markdown table: training images/s of each and their ratio,
# test accuracy, peak RSS, and test-set evaluation images/s. Then the interop
# check, both ways: PyTorch evaluates cnn's checkpoint (same tensor names), and
# cnn evaluates the state_dict PyTorch saved with safetensors (--config); the
# accuracies are printed beside each other.
#
# Run it on a quiet machine: both sides use every thread they are given, and
# a concurrent build slows PyTorch's OpenMP threads 10-20x. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

data_dir=../shared/data/mnist
cifar_dir=../data/cifar10
cifar_images=10000
threads=2
models="lenet three-conv oneconv cifar10-cnn"
out=
skip_torch=0
cnn=
while [ $# -gt 0 ]; do
    case "$1" in
        --data-dir) data_dir=$2; shift 2 ;;
        --cifar-dir) cifar_dir=$2; shift 2 ;;
        --cifar-images) cifar_images=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --models) models=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --skip-torch) skip_torch=1; shift ;;
        --cnn) cnn=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//; $d'; exit 0 ;;
        *) echo "bench.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done
if [ -z "$out" ]; then
    out=$(mktemp -d -t cnn-bench.XXXXXX)
elif [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
    echo "bench.sh: --out $out is not empty; give a new or empty directory" >&2
    exit 2
fi
mkdir -p "$out"
log() { printf '[bench] %s\n' "$*" >&2; }

if [ -z "$cnn" ]; then
    log "building cnn in release"
    cargo build --release --quiet
    target=$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    cnn=$target/release/cnn
fi
python=${CNN_TORCH_VENV:-.venv-torch}/bin/python
if [ "$skip_torch" = 0 ]; then
    scripts/dev/torch-venv.sh >&2
fi

export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {'d': d}))" "$@"; }

rows=()
interop=()
for model in $models; do
    config=configs/$model.json
    # File names in $out: recipes/cifar10-94 → recipes-cifar10-94.
    tag=${model//\//-}
    run=$out/cnn-$tag
    dir=$data_dir
    subset=()
    if [ "$(json "$config" 'd.get("data", {}).get("dataset", "")')" = cifar10 ]; then
        dir=$cifar_dir
        subset=(--limit-train "$cifar_images")
        if [ ! -f "$dir/test_batch.bin" ]; then
            echo "bench.sh: $dir has no CIFAR-10 (test_batch.bin); run scripts/get-cifar10.sh $dir or pass --cifar-dir" >&2
            exit 2
        fi
    fi
    log "$model: cnn, 1 epoch, $threads threads"
    /usr/bin/time -f '%M' -o "$out/cnn-$tag.rss" \
        "$cnn" --threads "$threads" train --config "$config" --data-dir "$dir" "${subset[@]}" \
        --epochs 1 --out "$run" --quiet --set training.tensorboard=false
    "$cnn" --threads "$threads" eval --checkpoint "$run/last.safetensors" --json > "$out/cnn-$tag-eval.json"
    cnn_ips=$(json "$run/history.json" 'd[-1]["images_per_second"]')
    cnn_acc=$(json "$run/history.json" 'd[-1]["test_acc"]')
    cnn_rss=$(( $(cat "$out/cnn-$tag.rss") / 1024 ))
    cnn_eval=$(json "$out/cnn-$tag-eval.json" 'd["images_per_second"]')
    if [ "$skip_torch" = 1 ]; then
        rows+=("$(printf '| %s | %.0f | - | - | %.2f%% | - | %d MB | - | %.0f | - |' \
            "$model" "$cnn_ips" "$(python3 -c "print(100*$cnn_acc)")" "$cnn_rss" "$cnn_eval")")
        continue
    fi
    log "$model: PyTorch, 1 epoch, $threads threads"
    "$python" scripts/torch_reference.py train --config "$config" --data-dir "$dir" "${subset[@]}" \
        --threads "$threads" --json --save "$out/torch-$tag.safetensors" > "$out/torch-$tag.json"
    t_ips=$(json "$out/torch-$tag.json" 'd["images_per_second"]')
    t_acc=$(json "$out/torch-$tag.json" 'd["test_acc"]')
    t_rss=$(json "$out/torch-$tag.json" 'round(d["peak_rss_mb"])')
    t_eval=$(json "$out/torch-$tag.json" 'd["eval_images_per_second"]')
    rows+=("$(python3 - "$model" "$cnn_ips" "$t_ips" "$cnn_acc" "$t_acc" "$cnn_rss" "$t_rss" "$cnn_eval" "$t_eval" <<'PY'
import sys
m, ci, ti, ca, ta, cr, tr, ce, te = sys.argv[1:]
ci, ti, ca, ta, ce, te = map(float, (ci, ti, ca, ta, ce, te))
print(f"| {m} | {ci:,.0f} | {ti:,.0f} | {ci / ti:.2f}× | {100 * ca:.2f}% | {100 * ta:.2f}% "
      f"| {cr} MB | {tr} MB | {ce:,.0f} | {te:,.0f} |")
PY
)")

    log "$model: interop, both ways"
    "$python" scripts/torch_reference.py eval --config "$config" --data-dir "$dir" \
        --checkpoint "$run/last.safetensors" --threads "$threads" --json > "$out/torch-reads-cnn-$tag.json"
    "$cnn" eval --config "$config" --data-dir "$dir" \
        --checkpoint "$out/torch-$tag.safetensors" --json > "$out/cnn-reads-torch-$tag.json"
    pct() { json "$1" "'%.2f%%' % (100 * $2)"; }
    interop+=("$(printf '| %s | %s | %s | %s | %s |' "$model" \
        "$(pct "$out/cnn-$tag-eval.json" 'd["accuracy"]')" \
        "$(pct "$out/torch-reads-cnn-$tag.json" 'd["accuracy"]')" \
        "$(pct "$out/torch-$tag.json" 'd["test_acc"]')" \
        "$(pct "$out/cnn-reads-torch-$tag.json" 'd["accuracy"]')")")
done

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
echo
echo "One epoch each, $threads threads each; $cpu, $(nproc --all) cores. Seed models: MNIST (50,000 training images), batch 64, Adam 1e-3."
echo "CIFAR-10 models: the first $cifar_images CIFAR-10 training images (after the 5,000-image validation split), random crop and flip, warm-up half the epoch; cifar10-cnn batch 128, AdamW 2e-3; resnet20-cifar10 batch 128, SGD 0.1 Nesterov; test on 10,000 images."
echo
echo "| model | cnn images/s | PyTorch images/s | cnn / PyTorch | cnn test acc | PyTorch test acc | cnn peak RSS | PyTorch peak RSS | cnn eval images/s | PyTorch eval images/s |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
if [ ${#interop[@]} -gt 0 ]; then
    echo
    echo "Interop: test accuracy of the same weights read by both."
    echo
    echo "| model | cnn checkpoint in cnn eval | cnn checkpoint in PyTorch | PyTorch weights in PyTorch | PyTorch weights in cnn eval --config |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    printf '%s\n' "${interop[@]}"
fi
echo
echo "Files: $out"
