#!/usr/bin/env bash
# The photo pipeline side by side: ImageNet networks at 224 px trained on a
# folder of JPEG photos streamed from disk, cnn against PyTorch/torchvision
# on the same machine.
#
#   scripts/bench-photos.sh [--images 20000] [--small 2000] [--steps 10] [--batch-size 64]
#                           [--eval-images 256] [--threads 2] [--archs "resnet18 resnet50"]
#                           [--cifar-dir DIR] [--photos DIR] [--out DIR] [--cnn PATH] [--skip-torch]
#
# The photos: the first --images CIFAR-10 training images upscaled to
# 500×375 JPEGs (scripts/make-photo-folder.py; real images, as there is
# no ImageNet here), made once under --photos (default
# ~/.cache/cnn/photos), and the first --small of them as a second folder.
# For each network (configs/zoo/<arch>.json with a new 10-class head,
# random initialisation, Adam 1e-3, batch 64):
#   * cnn:     cnn train with data.cache "none" (each photo decoded when its
#              batch needs it, one thread decoding ahead) and the usual
#              photo augmentation (random resized crop, flip,
#              TrivialAugmentWide, random erasing 0.25) for --steps steps,
#              on the large folder and on the small one (peak RSS of both:
#              memory must not grow with the folder); then cnn eval of
#              --eval-images held-out photos (shorter side 256, centre crop
#              224, decoding included). CNN_PROFILE gives the time spent
#              reading, decoding and augmenting the batches.
#   * PyTorch: scripts/torch_photos.py, the same network from torchvision,
#              ImageFolder + DataLoader (1 worker process) with the same
#              transforms, channels-last.
# One markdown table: training and evaluation images/s of each, peak RSS,
# and the pipeline's share of cnn's training time. Run it on a quiet
# machine. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

images=20000
small=2000
steps=10
batch=64
eval_images=256
threads=2
archs="resnet18 resnet50"
cifar_dir=data/cifar10
photos=${HOME}/.cache/cnn/photos
out=
cnn=
skip_torch=0
while [ $# -gt 0 ]; do
    case "$1" in
        --images) images=$2; shift 2 ;;
        --small) small=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --batch-size) batch=$2; shift 2 ;;
        --eval-images) eval_images=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --archs) archs=$2; shift 2 ;;
        --cifar-dir) cifar_dir=$2; shift 2 ;;
        --photos) photos=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --cnn) cnn=$2; shift 2 ;;
        --skip-torch) skip_torch=1; shift ;;
        -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-photos.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
log() { echo "[bench-photos] $*" >&2; }
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

if [ ! -f "$cifar_dir/data_batch_1.bin" ]; then
    echo "bench-photos.sh: $cifar_dir has no CIFAR-10 (data_batch_1.bin); run scripts/get-cifar10.sh $cifar_dir or pass --cifar-dir" >&2
    exit 2
fi
python=$(scripts/dev/torch-venv.sh)
if [ -z "$cnn" ]; then
    log "building cnn (release)"
    cargo build --release --quiet
    cnn=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/cnn
fi
out=${out:-$(mktemp -d)}
mkdir -p "$out"
big=$photos/p$images
little=$photos/p$small
for dir_n in "$big:$images" "$little:$small"; do
    log "photos: ${dir_n%%:*}"
    "$python" scripts/make-photo-folder.py "$cifar_dir" "${dir_n%%:*}" "${dir_n##*:}"
done

augment='{"random_resized_crop": {}, "horizontal_flip": 0.5, "auto_augment": {"policy": "trivial_augment_wide"}, "random_erasing": {"p": 0.25}}'
# Profile total (ms) and µs per call of one phase from a CNN_PROFILE table.
phase() { awk -v name="$2" 'index($0, name) == 1 { print $(NF-2); found=1 } END { if (!found) print 0 }' "$1"; }
per_call() { awk -v name="$2" 'index($0, name) == 1 { print $NF; found=1 } END { if (!found) print 0 }' "$1"; }

rows=()
for arch in $archs; do
    for folder in "$big" "$little"; do
        tag=$arch-$(basename "$folder")
        log "$tag: cnn, $steps steps of $batch, $threads threads"
        CNN_PROFILE=1 /usr/bin/time -f '%M' -o "$out/cnn-$tag.rss" \
            "$cnn" --threads "$threads" train --config "configs/zoo/$arch.json" --num-classes 10 \
            --data-dir "$folder" --out "$out/cnn-$tag" --force --epochs 1 --batch-size "$batch" \
            --set 'data.cache="none"' --set "data.augment=$augment" \
            --set data.limit_train=$((steps * batch)) --set data.val_size=$batch \
            --set data.test_size="$eval_images" --set data.eval_batch_size="$batch" \
            --set training.tensorboard=false --quiet 2> "$out/cnn-$tag.log"
    done
    tag=$arch-$(basename "$big")
    "$cnn" --threads "$threads" eval --checkpoint "$out/cnn-$tag/last.safetensors" --json \
        --batch-size "$batch" > "$out/cnn-$tag-eval.json"
    ips=$(json "$out/cnn-$tag/history.json" 'd[-1]["images_per_second"]')
    secs=$(json "$out/cnn-$tag/history.json" 'd[-1]["epoch_seconds"]')
    rss=$(( $(cat "$out/cnn-$tag.rss") / 1024 ))
    rss_small=$(( $(cat "$out/cnn-$arch-$(basename "$little").rss") / 1024 ))
    eval_ips=$(json "$out/cnn-$tag-eval.json" 'd["images_per_second"]')
    batch_ms=$(phase "$out/cnn-$tag.log" "batch: images")
    ahead_us=$(per_call "$out/cnn-$tag.log" "photos: decoded ahead")
    t_ips=- t_eval=- t_rss=- t_wait=-
    if [ "$skip_torch" = 0 ]; then
        log "$arch: PyTorch, $steps steps of $batch, $threads threads"
        "$python" scripts/torch_photos.py --data-dir "$big" --arch "$arch" --steps "$steps" \
            --batch-size "$batch" --eval-images "$eval_images" --threads "$threads" > "$out/torch-$arch.json"
        t_ips=$(json "$out/torch-$arch.json" 'round(d["images_per_second"], 1)')
        t_eval=$(json "$out/torch-$arch.json" 'round(d["eval_images_per_second"], 1)')
        t_rss=$(json "$out/torch-$arch.json" '"%.0f + %.0f" % (d["peak_rss_mb"], d["worker_peak_rss_mb"])')
        t_wait=$(json "$out/torch-$arch.json" '"%.1f%%" % (100 * d["loader_wait_share"])')
    fi
    rows+=("$(python3 - "$arch" "$ips" "$t_ips" "$eval_ips" "$t_eval" "$rss" "$rss_small" "$t_rss" \
        "$batch_ms" "$ahead_us" "$secs" "$t_wait" <<'PY'
import sys
arch, ips, t_ips, ev, t_ev, rss, rss_small, t_rss, batch_ms, ahead_us, secs, t_wait = sys.argv[1:]
ips, ev, secs = float(ips), float(ev), float(secs)
ratio = f"{ips / float(t_ips):.2f}×" if t_ips != "-" else "-"
eratio = f"{ev / float(t_ev):.2f}×" if t_ev != "-" else "-"
share = float(batch_ms) / 1000 / secs
print(f"| {arch} | {ips:.1f} | {t_ips} | {ratio} | {ev:.1f} | {t_ev} | {eratio} | {rss} MB | {rss_small} MB "
      f"| {t_rss} MB | {100 * share:.1f}% ({float(ahead_us) / 1000:.1f} ms/photo) | {t_wait} |")
PY
)")
done

echo
echo "$(date -u +%Y-%m-%d), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $threads threads each;"
echo "$steps training steps of $batch photos (500×375 JPEGs) and $eval_images evaluated, 224 px:"
echo
echo "| network | cnn train img/s | PyTorch train img/s | cnn / PyTorch | cnn eval img/s | PyTorch eval img/s | cnn / PyTorch | cnn peak RSS, $images photos | cnn peak RSS, $small photos | PyTorch peak RSS (main + worker) | cnn time assembling batches (a worker's decode) | PyTorch time waiting for the loader |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
echo
echo "files: $out"
