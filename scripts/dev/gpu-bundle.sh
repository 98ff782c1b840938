#!/usr/bin/env bash
# gpu-bundle.sh -- packs what scripts/gpu-check.sh needs on a GPU machine that
# has the NVIDIA driver, CUDA libraries and PyTorch but no Rust and no network:
#
#   scripts/dev/gpu-bundle.sh DIR [--cnn PATH] [--mnist DIR] [--cifar DIR]
#                                 [--cifar-per-batch N] [--cifar-test N]
#
# DIR receives
#   cnn.gz, libcudart.so.12  the CUDA build (scripts/build-cuda.sh --release),
#                          stripped and compressed (its kernels' PTX text makes
#                          it 77 MB), and the one CUDA library it links (it
#                          finds it beside itself)
#   mnist/                 MNIST's four .gz files
#   cifar10/               a CIFAR-10 subset in the same binary format: the
#                          first N images (default 1000) of each training batch
#                          and the first M (default 1000) test images
# Then, on the GPU machine, from a checkout of this repository:
#   scripts/dev/gpu-run.sh DIR OUT_DIR [gpu-check.sh options]
# With the defaults the bundle is about 52 MiB.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
die() { printf 'gpu-bundle.sh: %s\n' "$*" >&2; exit 2; }

dir="" cnn=target/release/cnn mnist=../shared/data/mnist cifar=data/cifar10 per_batch=1000 n_test=1000
while [ $# -gt 0 ]; do
    case "$1" in
        --cnn) cnn=$2; shift 2 ;;
        --mnist) mnist=$2; shift 2 ;;
        --cifar) cifar=$2; shift 2 ;;
        --cifar-per-batch) per_batch=$2; shift 2 ;;
        --cifar-test) n_test=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1 (try --help)" ;;
        *) [ -z "$dir" ] || die "one DIR only"; dir=$1; shift ;;
    esac
done
[ -n "$dir" ] || die "give DIR (try --help)"
[ -x "$cnn" ] || die "no cnn binary at $cnn (scripts/build-cuda.sh --release builds one)"
"$cnn" --version >/dev/null || die "$cnn does not run"
ldd "$cnn" | grep -q 'libcudart.so.12' || die "$cnn is not a CUDA build (it does not link libcudart.so.12)"
cudart=$(ldd "$cnn" | awk '/libcudart.so.12/ {print $3}')
[ -f "$cudart" ] || cudart=${CNN_CUDA_HOME:-$HOME/.cache/cnn/cuda}/lib64/libcudart.so.12
[ -f "$cudart" ] || die "libcudart.so.12 not found (LD_LIBRARY_PATH, or \$CNN_CUDA_HOME/lib64)"
[ -f "$mnist/train-images-idx3-ubyte.gz" ] || die "no MNIST .gz files in $mnist"

rm -rf "$dir"
mkdir -p "$dir/mnist" "$dir/cifar10"
strip -o "$dir/cnn" "$cnn"
gzip -6 "$dir/cnn"
cp -L "$cudart" "$dir/libcudart.so.12"
cp "$mnist"/*-ubyte.gz "$dir/mnist/"
record=3073
if [ -f "$cifar/test_batch.bin" ]; then
    for i in 1 2 3 4 5; do
        head -c $((per_batch * record)) "$cifar/data_batch_$i.bin" > "$dir/cifar10/data_batch_$i.bin"
    done
    head -c $((n_test * record)) "$cifar/test_batch.bin" > "$dir/cifar10/test_batch.bin"
else
    rmdir "$dir/cifar10"
    echo "gpu-bundle.sh: no CIFAR-10 in $cifar (scripts/get-cifar10.sh): the bundle has MNIST only" >&2
fi
du -sh "$dir"
