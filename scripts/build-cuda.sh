#!/usr/bin/env bash
# Build cnn with CUDA on a machine without CUDA (or with it): installs the
# toolkit pieces (scripts/dev/install-cuda-build-deps.sh), then runs
#   cargo build --features cuda [--release] ...
# with candle-core patched to load the NVIDIA libraries at run time.
#
# Usage:
#   scripts/build-cuda.sh [--cudnn] [--release] [more cargo build args]
#
# Why the patch: candle-core 0.11 asks cudarc to *link* libcuda.so.1,
# libcublas.so.12 and libcurand.so.10, so a CUDA build does not even start
# on a machine without the NVIDIA driver (the loader fails with exit 127
# before main). With cudarc's dynamic-loading the binary starts anywhere and
# `--device cuda` says clearly what is missing, `--device auto` falls back
# to the CPU. The patch is one word in candle-core's Cargo.toml, applied to
# a copy of the crate under $CNN_CUDA_HOME (the repository stays untouched)
# and passed to cargo with --config 'patch.crates-io...'. Cargo.lock is
# restored afterwards so that git sees no change.
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

# The registry copy of candle-core, then a patched copy of it.
cargo fetch --quiet
src=$(cargo metadata --format-version 1 --locked 2>/dev/null | python3 -c '
import json, sys
pkgs = json.load(sys.stdin)["packages"]
print(next(p["manifest_path"] for p in pkgs if p["name"] == "candle-core"))')
src=$(dirname "$src")
version=$(basename "$src")
patched="$CUDA_HOME/$version-dynamic-loading"
if [ ! -f "$patched/.patched" ]; then
    rm -rf "$patched"
    cp -r "$src" "$patched"
    grep -q '"dynamic-linking",' "$patched/Cargo.toml" \
        || { echo "build-cuda: $version no longer asks cudarc for dynamic-linking; update this script" >&2; exit 1; }
    sed -i 's/"dynamic-linking",/"dynamic-loading",/' "$patched/Cargo.toml"
    touch "$patched/.patched"
fi

lock_backup=$(mktemp)
cp Cargo.lock "$lock_backup"
trap 'cp "$lock_backup" Cargo.lock; rm -f "$lock_backup"' EXIT
echo "build-cuda: cargo build --features $feature ${cargo_args[*]} (candle-core from $patched)" >&2
cargo build --features "$feature" --config "patch.crates-io.candle-core.path=\"$patched\"" "${cargo_args[@]}"
