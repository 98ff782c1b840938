#!/usr/bin/env bash
# gpu-run.sh -- on a GPU machine, runs scripts/gpu-check.sh with a bundle made
# by scripts/dev/gpu-bundle.sh:
#
#   scripts/dev/gpu-run.sh BUNDLE OUT_DIR [gpu-check.sh options]
#   scripts/dev/gpu-run.sh BUNDLE -- COMMAND...   (COMMAND with $CNN the binary)
#
# The CUDA build loads cuBLAS and cuRAND when it starts using the GPU (cudarc's
# dynamic loading), asking first for the plain names libcublas.so,
# libcublasLt.so and libcurand.so. This links those names, in a temporary
# folder put first on LD_LIBRARY_PATH, to what the machine has: a CUDA
# toolkit's libraries or PyTorch's nvidia-* wheels, CUDA 12's sonames first (the
# build's own), else the newest there (cuBLAS 13 keeps the calls cnn makes).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
[ $# -ge 2 ] || { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 2; }
bundle=$(realpath "$1") out=$2
shift 2

libs=$(mktemp -d)
roots=()
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
    [ -d "$d" ] && roots+=("$d")
done
while read -r d; do [ -d "$d" ] && roots+=("$d"); done < <(python3 -c '
import nvidia
for p in nvidia.__path__: print(p)' 2>/dev/null || true)
for lib in cublas cublasLt curand; do
    found=$(find "${roots[@]}" -maxdepth 4 -name "lib$lib.so.*" 2>/dev/null |
        awk -v l="lib$lib.so.12" '{ print (index($0, l) ? 0 : 1), $0 }' | sort -k1,1n -k2,2Vr | head -1 | cut -d' ' -f2-)
    if [ -n "$found" ]; then
        ln -sf "$found" "$libs/lib$lib.so"
        echo "gpu-run: lib$lib.so -> $found" >&2
    else
        echo "gpu-run: no lib$lib.so.* under ${roots[*]}" >&2
    fi
done
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# The binary unpacked beside its libcudart.so.12 (found through its rpath).
bin=$(mktemp -d)
gunzip -c "$bundle/cnn.gz" > "$bin/cnn"
chmod +x "$bin/cnn"
cp "$bundle/libcudart.so.12" "$bin/"
if [ "$out" = -- ]; then
    CNN=$bin/cnn exec "$@"
fi
args=(--cnn "$bin/cnn" --mnist "$bundle/mnist")
[ -d "$bundle/cifar10" ] && args+=(--cifar "$bundle/cifar10")
exec scripts/gpu-check.sh "$out" "${args[@]}" "$@"
