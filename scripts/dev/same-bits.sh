#!/usr/bin/env bash
# Trains a few configs with two cnn binaries and compares the checkpoints'
# tensors bit for bit (the metadata, which holds timings, is left out): the
# check that a change meant to keep the numbers kept them.
#
#   scripts/dev/same-bits.sh OLD_CNN NEW_CNN [CONFIG...]
#
# Default configs: the seed models and the MNIST recipe on 512 images of
# tests/fixtures/mnist-small, and, when CIFAR-10 is in data/cifar10 (or
# $CIFAR_DIR; scripts/get-cifar10.sh), the batch-norm, residual and
# recipe networks on 256 of its images. SAME_BITS_ARGS adds train flags
# (say, CNN_KERNELS or --threads 1 runs). Exit 1 on the first difference.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
old=$1 new=$2
shift 2
configs=("$@")
if [ ${#configs[@]} -eq 0 ]; then
    configs=(configs/oneconv.json configs/lenet.json configs/three-conv.json configs/mlp.json
        configs/recipes/mnist-99.json)
    cifar=${CIFAR_DIR:-data/cifar10}
    if [ -f "$cifar/test_batch.bin" ]; then
        configs+=(configs/cifar10-cnn.json configs/resnet20-cifar10.json
            configs/resnet9-cifar10.json configs/recipes/cifar10-94.json)
    fi
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
compare() { python3 scripts/dev/same-tensors.py "$1" "$2"; }
for c in "${configs[@]}"; do
    name=$(basename "$c" .json)
    echo "$name:"
    if grep -q '"cifar10"' "$c"; then
        data=(--data-dir "${CIFAR_DIR:-data/cifar10}" --limit-train 256 --limit-test 128)
    else
        data=(--data-dir tests/fixtures/mnist-small --limit-train 512 --limit-test 200)
    fi
    for side in old new; do
        bin=${!side}
        # shellcheck disable=SC2086
        "$bin" train --config "$c" "${data[@]}" --epochs 2 --set data.val_size=64 \
            --batch-size 64 --out "$work/$side-$name" --quiet ${SAME_BITS_ARGS:-} >/dev/null
    done
    for f in last best; do
        compare "$work/old-$name/$f.safetensors" "$work/new-$name/$f.safetensors"
    done
done
