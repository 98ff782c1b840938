#!/usr/bin/env bash
# The test suite, on a fresh Debian machine with Rust: installs the system
# packages the tests use when they are missing, then runs `cargo test` with
# any arguments given (`scripts/test.sh --test integration sweep::`).
#
#   dataset-fashion-mnist  the tests train on Debian's Fashion-MNIST and check
#                          that cnn finds it in /usr/share/datasets
#   parallel               GNU parallel runs the sweep tests' points
#   python3-venv           the ONNX Runtime venv below is made with it
#   man-db                 a test renders the man pages cnn writes with man
#   libopenmpi-dev, openmpi-bin, libclang-dev
#                          the `mpi` feature (cnn train --distributed mpi) builds
#                          against Open MPI (bindgen needs libclang) and its
#                          tests start the ranks with mpirun
#
# and two Python venvs from PyPI, each made once: ONNX Runtime, for the
# tests that run what `cnn export` writes (scripts/dev/onnx-venv.sh;
# ~/.cache/cnn/onnx-venv), and PyTorch with torchvision, for the model zoo's
# tests against torchvision's own networks (scripts/dev/torch-venv.sh;
# ~/.cache/cnn/torch-venv, ~2.4 GB to download the first time). Installing
# the packages needs root (or sudo). .ci/run calls exactly this command.
# Without arguments it runs every test of the default build, then
# the distributed tests in a build with `--features mpi` (which leaves that
# build's binary in the target directory).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

packages=(dataset-fashion-mnist parallel python3-venv man-db libopenmpi-dev openmpi-bin libclang-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || {
            echo "test.sh: the tests need ${missing[*]}; install them as root: apt-get install ${missing[*]}" >&2
            exit 2
        }
        sudo=sudo
    fi
    echo "test.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may have no package lists yet.
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
        { $sudo apt-get update -q && $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"; }
fi
CNN_ONNX_PYTHON=$(scripts/dev/onnx-venv.sh)
export CNN_ONNX_PYTHON
CNN_TORCH_PYTHON=$(CNN_TORCH_VENV=${CNN_TORCH_VENV:-$HOME/.cache/cnn/torch-venv} scripts/dev/torch-venv.sh)
export CNN_TORCH_PYTHON
if [ $# -gt 0 ]; then
    exec cargo test "$@"
fi
cargo test
# Only the distributed tests change with MPI; the rest ran above.
cargo test --features mpi --test integration distributed::
