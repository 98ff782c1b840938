#!/usr/bin/env bash
# Side-by-side training benchmark: cnn against PyTorch on the same machine.
#
#   scripts/bench.sh [--data-dir DIR] [--cifar-dir DIR] [--cifar-images N] [--threads N]
#                    [--models "lenet three-conv oneconv cifar10-cnn"] [--out DIR] [--skip-torch]
#                    [--cnn PATH] [--precision bf16]
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
# test accuracy, peak RSS, and test-set evaluation images/s.
#
# With --precision bf16, each model runs four ways instead: cnn in fp32 and
# in bf16 (training.precision), PyTorch in fp32 and with bf16 autocast
# (torch_reference.py --precision bf16; channels-last), and the table gives
# all four's training and evaluation images/s, test accuracy and peak RSS.
# A line before it gives the machine's bf16 matrix rate: PyTorch's bf16
# 1024³ product on one thread, beside cnn's own bf16 product
# (examples/bf16bench.rs), and what cnn's largest convolution reached in
# bf16 (CNN_PROFILE), as a fraction of it. Then the interop
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
precision=fp32
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
        --precision) precision=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//; $d'; exit 0 ;;
        *) echo "bench.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done
case "$precision" in
    fp32 | bf16) ;;
    *) echo "bench.sh: --precision $precision: give fp32 or bf16" >&2; exit 2 ;;
esac
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

# The data directory and subset flags of a model's config.
data_of() {
    local config=$1
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
}

if [ "$precision" = bf16 ]; then
    rows=()
    largest=
    for model in $models; do
        config=configs/$model.json
        tag=${model//\//-}
        data_of "$config"
        for p in fp32 bf16; do
            run=$out/cnn-$tag-$p
            log "$model: cnn $p, 1 epoch, $threads threads"
            CNN_PROFILE=1 /usr/bin/time -f '%M' -o "$run.rss" \
                "$cnn" --threads "$threads" train --config "$config" --data-dir "$dir" "${subset[@]}" \
                --epochs 1 --out "$run" --quiet --precision "$p" --set training.tensorboard=false \
                2> "$run.profile"
            "$cnn" --threads "$threads" eval --checkpoint "$run/last.safetensors" --json > "$run-eval.json"
            if [ "$skip_torch" = 0 ]; then
                log "$model: PyTorch $p, 1 epoch, $threads threads"
                "$python" scripts/torch_reference.py train --config "$config" --data-dir "$dir" "${subset[@]}" \
                    --threads "$threads" --json --precision "$p" > "$out/torch-$tag-$p.json"
            fi
        done
        rows+=("$(python3 - "$model" "$out" "$tag" "$skip_torch" <<'PY'
import json, sys
model, out, tag, skip = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
def load(p):
    with open(p) as f:
        return json.load(f)
c = {p: load(f"{out}/cnn-{tag}-{p}/history.json")[-1] for p in ("fp32", "bf16")}
ce = {p: load(f"{out}/cnn-{tag}-{p}-eval.json") for p in ("fp32", "bf16")}
rss = {p: int(open(f"{out}/cnn-{tag}-{p}.rss").read()) // 1024 for p in ("fp32", "bf16")}
t = {} if skip else {p: load(f"{out}/torch-{tag}-{p}.json") for p in ("fp32", "bf16")}
n = lambda v: f"{v:,.0f}"
a = lambda v: f"{100 * v:.2f}%"
tr = lambda p, k, f: f(t[p][k]) if t else "-"
ratio = f"{c['bf16']['images_per_second'] / t['bf16']['images_per_second']:.2f}×" if t else "-"
print(f"| {model} | {n(c['fp32']['images_per_second'])} | {n(c['bf16']['images_per_second'])} "
      f"| {tr('fp32', 'images_per_second', n)} | {tr('bf16', 'images_per_second', n)} | {ratio} "
      f"| {a(c['fp32']['test_acc'])} / {a(c['bf16']['test_acc'])} / {tr('fp32', 'test_acc', a)} / {tr('bf16', 'test_acc', a)} "
      f"| {rss['fp32']} / {rss['bf16']} MB / {tr('fp32', 'peak_rss_mb', n)} / {tr('bf16', 'peak_rss_mb', n)} MB "
      f"| {n(ce['fp32']['images_per_second'])} / {n(ce['bf16']['images_per_second'])} "
      f"/ {tr('fp32', 'eval_images_per_second', n)} / {tr('bf16', 'eval_images_per_second', n)} |")
PY
)")
        largest=$out/cnn-$tag-bf16.profile
    done
    # The machine's bf16 matrix rate, and the largest convolution's share of it.
    cargo build --release --quiet --example bf16bench
    examples=$(dirname "$cnn")/examples
    [ -x "$examples/bf16bench" ] || examples=$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/examples
    gemm_cnn=$("$examples/bf16bench" | awk -F'|' '/1024×1024×1024/ {gsub(/ /, "", $4); print $4}')
    gemm_torch=-
    if [ "$skip_torch" = 0 ]; then
        gemm_torch=$("$python" - <<'PY'
import time, torch
torch.set_num_threads(1)
a = torch.randn(1024, 1024, dtype=torch.bfloat16)
b = torch.randn(1024, 1024, dtype=torch.bfloat16)
for _ in range(3):
    a @ b
t = time.perf_counter()
for _ in range(20):
    a @ b
print(f"{2 * 1024 ** 3 * 20 / (time.perf_counter() - t) / 1e9:.0f}")
PY
)
    fi
    layer=$(python3 - "$largest" <<'PY'
import re, sys
best = None
for line in open(sys.argv[1]):
    m = re.match(r"(conv2d (\d+)→(\d+) k(\d+)x?(\d*) forward \[(.*)\])\s+([\d.]+)\s+(\d+)", line.strip())
    if m and (best is None or float(m.group(7)) > best[1]):
        best = (m.group(1), float(m.group(7)))
print(best[0] if best else "-")
PY
)
    cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
    echo
    echo "One epoch each, $threads threads each; $cpu, $(nproc --all) cores; bf16 instructions: $(grep -o -w -E 'amx_bf16|avx512_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')"
    echo "bf16 matrix rate, 1024³ on one thread: PyTorch $gemm_torch GFLOP/s, cnn's product $gemm_cnn GFLOP/s; the op that took the longest in the last model's bf16 run: $layer (its time per call is in $largest)."
    echo
    echo "| model | cnn fp32 img/s | cnn bf16 img/s | PyTorch fp32 img/s | PyTorch bf16 img/s | cnn bf16 / PyTorch bf16 | test acc (cnn fp32 / bf16 / PyTorch fp32 / bf16) | peak RSS (same order) | eval img/s (same order) |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    printf '%s\n' "${rows[@]}"
    echo
    echo "Files: $out"
    exit 0
fi

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
