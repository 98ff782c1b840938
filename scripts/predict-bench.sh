#!/usr/bin/env bash
# Serving throughput, side by side: `cnn predict` against ONNX Runtime running
# the model `cnn export` wrote, on the same PNG files (MNIST test digits).
#
#   scripts/predict-bench.sh [--checkpoint FILE] [--data-dir DIR] [--images N]
#                            [--threads N] [--batch-size N] [--runs N] [--out DIR]
#
#   1. builds cnn in release; makes the ONNX Runtime venv
#      (scripts/dev/onnx-venv.sh);
#   2. without --checkpoint, trains configs/lenet.json for one epoch on MNIST
#      (--data-dir, default ../shared/data/mnist);
#   3. writes the first N test images (default 10,000) as 28x28 PNG files;
#   4. cnn export --checkpoint ... -o model.onnx;
#   5. times, --runs times each (default 3; the best run counts), on N threads
#      each (default 2) in batches of --batch-size (default 256), from the
#      PNG folder to JSON lines on stdout:
#        cnn predict --jsonl --preprocess stretch  (decodes and classifies)
#        cnn predict --jsonl                       (with MNIST's digit centring)
#        scripts/ort_predict.py                    (Pillow decoding on a thread
#                                                   pool, ONNX Runtime model)
#   6. checks that cnn (stretch) and ONNX Runtime give every image the same
#      class, and prints a markdown table: images/s, seconds, peak RSS.
#
# Run it on a quiet machine. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

checkpoint=
data_dir=${CNN_DATA_DIR:-../shared/data/mnist}
images=10000
threads=2
batch=256
runs=3
out=
while [ $# -gt 0 ]; do
    case "$1" in
        --checkpoint) checkpoint=$2; shift 2 ;;
        --data-dir) data_dir=$2; shift 2 ;;
        --images) images=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --batch-size) batch=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//; $d'; exit 0 ;;
        *) echo "predict-bench.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done
if [ -z "$out" ]; then
    out=$(mktemp -d -t cnn-predict-bench.XXXXXX)
elif [ -n "$(ls -A "$out" 2>/dev/null)" ]; then
    echo "predict-bench.sh: --out $out is not empty; give a new or empty directory" >&2
    exit 2
fi
mkdir -p "$out"
log() { printf '[predict-bench] %s\n' "$*" >&2; }

log "building cnn in release"
cargo build --release --quiet
cnn=$PWD/target/release/cnn
python=$(scripts/dev/onnx-venv.sh)
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads

if [ -z "$checkpoint" ]; then
    log "training configs/lenet.json for one epoch"
    "$cnn" --threads "$threads" train --config configs/lenet.json --data-dir "$data_dir" \
        --epochs 1 --out "$out/run" --quiet --set training.tensorboard=false
    checkpoint=$out/run/best.safetensors
fi

log "writing $images test digits as PNG files"
"$python" - "$data_dir/t10k-images-idx3-ubyte.gz" "$images" "$out/png" <<'EOF'
import gzip, os, sys
import numpy as np
from PIL import Image
path, n, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with gzip.open(path) as f:
    pixels = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
if n > len(pixels):
    sys.exit(f"{path} has {len(pixels)} images, fewer than --images {n}")
os.makedirs(folder)
for i in range(n):
    Image.fromarray(pixels[i]).save(os.path.join(folder, f"{i:05d}.png"))
EOF

"$cnn" export --checkpoint "$checkpoint" -o "$out/model.onnx" >&2

# time_best NAME CMD...: runs CMD --runs times with stdout to $out/NAME.jsonl;
# sets best (the best wall time, s) and rss (that run's peak RSS, MB).
time_best() {
    local name=$1 secs kb
    shift
    best= rss=
    for _ in $(seq "$runs"); do
        if ! /usr/bin/time -f '%e %M' -o "$out/$name.time" "$@" >"$out/$name.jsonl" 2>"$out/$name.err"; then
            cat "$out/$name.err" >&2
            exit 1
        fi
        read -r secs kb <"$out/$name.time"
        if [ -z "$best" ] || python3 -c "import sys; sys.exit(not $secs < $best)"; then
            best=$secs rss=$((kb / 1024))
        fi
    done
}

log "cnn predict --preprocess stretch ($runs runs)"
time_best cnn-stretch "$cnn" --threads "$threads" predict \
    --checkpoint "$checkpoint" --jsonl --batch-size "$batch" --preprocess stretch "$out/png"
cnn_s=$best cnn_rss=$rss
log "cnn predict, digit preprocessing ($runs runs)"
time_best cnn-digit "$cnn" --threads "$threads" predict \
    --checkpoint "$checkpoint" --jsonl --batch-size "$batch" "$out/png"
digit_s=$best digit_rss=$rss
log "ONNX Runtime ($runs runs)"
time_best ort "$python" scripts/ort_predict.py "$out/model.onnx" \
    "$out/png" --threads "$threads" --batch-size "$batch"
ort_s=$best ort_rss=$rss

"$python" - "$out" "$images" <<EOF
import json, sys
out, n = sys.argv[1], int(sys.argv[2])
def classes(name):
    rows = [json.loads(l) for l in open(f"{out}/{name}.jsonl")]
    assert len(rows) == n, f"{name}: {len(rows)} results for {n} images"
    return {r["path"].rsplit("/", 1)[-1]: r["class"] for r in rows}
a, b = classes("cnn-stretch"), classes("ort")
same = sum(a[k] == b[k] for k in a)
print(f"cnn (stretch) and ONNX Runtime agree on {same} of {n} images", file=sys.stderr)
ort_err = open(f"{out}/ort.err").read().strip()
print(ort_err, file=sys.stderr)
rows = [
    ("cnn predict --preprocess stretch", $cnn_s, $cnn_rss),
    ("cnn predict (digit centring)", $digit_s, $digit_rss),
    ("ONNX Runtime (scripts/ort_predict.py)", $ort_s, $ort_rss),
]
print(f"| {n:,} PNG digits, $threads threads, batch $batch | images/s | seconds | peak RSS |")
print("| --- | ---: | ---: | ---: |")
for name, secs, rss in rows:
    print(f"| {name} | {n / secs:,.0f} | {secs:.2f} | {rss} MB |")
if same != n:
    sys.exit(f"{n - same} images get another class")
EOF
log "files in $out"
