#!/usr/bin/env bash
# Build cnn with CUDA on a machine without CUDA (or with it): installs the
# toolkit pieces (scripts/dev/install-cuda-build-deps.sh), then runs
#   cargo build --features cuda [--release] ...
#
# The candle-core cnn builds (vendor/candle-core, see CNN-CHANGES.md there)
# asks cudarc to *load* libcuda.so.1, libcublas.so.12 and libcurand.so.10 at
# run time rather than link them (upstream links them, so a CUDA build would
# not even start on a machine without the NVIDIA driver: exit 127 before
# main). So the binary starts anywhere, `--device cuda` says clearly what is
# missing, and `--device auto` falls back to the CPU.
#
# The binary still links libcudart.so.12 (candle-kernels uses it); it looks
# for it next to itself first (rpath $ORIGIN, see build.rs), then on the
# library path. To run on another machine, copy target/*/cnn together with
# libcudart.so.12 from $CNN_CUDA_HOME/lib64; the GPU machine's driver
# provides libcuda.so.1, and libcublas.so.12, libcublasLt.so.12 and
# libcurand.so.10 must be on its library path (CUDA 12 runtime, or copied
# from $CNN_CUDA_HOME/lib64 too).
set -euo pipefail
cd "$(dirname "$0")/.."

feature=cuda
cargo_args=()
for arg in "$@"; do
    case "$arg" in
        --cudnn) feature=cudnn ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//; $d'; exit 0 ;;
        *) cargo_args+=("$arg") ;;
    esac
done

deps_args=()
[ "$feature" = cudnn ] && deps_args+=(--cudnn)
eval "$(scripts/dev/install-cuda-build-deps.sh "${deps_args[@]}")"

echo "build-cuda: cargo build --features $feature ${cargo_args[*]}" >&2
cargo build --features "$feature" "${cargo_args[@]}"
