#!/usr/bin/env bash
# Creates (idempotently) the Python virtual environment that runs
# scripts/torch_reference.py, the PyTorch side of scripts/bench.sh and of the
# checkpoint interop check. Everything comes from PyPI with pinned versions.
#
#   scripts/dev/torch-venv.sh            # venv at .venv-torch (repo root)
#   CNN_TORCH_VENV=/tmp/tv scripts/dev/torch-venv.sh
#   PYTHON=python3.12 scripts/dev/torch-venv.sh
#
# Progress goes to stderr; the last line on stdout is the venv's Python, so
# that `python=$(scripts/dev/torch-venv.sh)` works (scripts/test.sh).
#
# PyPI's `torch` wheel is a CUDA build. We only ever run it on the CPU, but
# `import torch` still loads the CUDA libraries that libtorch_cuda.so and
# libtorch_python.so are linked against (DT_NEEDED), so those NVIDIA wheels
# must be present even without a GPU. Everything is installed with --no-deps
# from the list below, found empirically (on a GPU-less machine, removing one
# package at a time):
#   * needed by `import torch`: typing-extensions and the 11 NVIDIA wheels below
#     (cudart, cupti, nvrtc, cublas, cufft, cufile, cusparse, cudnn,
#     cusparselt, nccl, nvshmem);
#   * needed to train (torch.optim imports torch._dynamo): sympy, mpmath;
#   * not needed on the CPU but kept because torch declares them and they are
#     small (~30 MB): filelock, networkx, jinja2, MarkupSafe, fsspec,
#     setuptools.
# Deliberately left out although torch's METADATA lists them (~1.5 GB
# unpacked, ~570 MB download): triton, cuda-bindings (and cuda-pathfinder),
# the cuda-toolkit meta package and from it nvidia-cusolver (only
# libtorch_cuda_linalg.so, loaded for CUDA linear algebra, needs it),
# nvidia-nvjitlink (cusparse dlopens it only for GPU JIT linking),
# nvidia-nvtx (optional at import) and nvidia-cuda-cccl (headers).
#
# The NVIDIA versions are the ones torch 2.15.0's METADATA requires for Linux
# x86_64, directly or through cuda-toolkit[...]==13.2.2 (whose extras pin
# nvidia-cublas 13.4.1.3.*, nvidia-cuda-* 13.2.86.*, ...). To move to another
# torch, read its METADATA (unzip -p torch-*.whl '*.dist-info/METADATA' |
# grep Requires-Dist), update the pins together and rerun the smoke test.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

VENV=${CNN_TORCH_VENV:-.venv-torch}
PYTHON=${PYTHON:-python3}

PACKAGES=(
    # PyTorch itself and its pure-Python dependencies.
    torch==2.15.0
    filelock==4.2.11
    typing-extensions==4.16.0
    sympy==1.14.0
    mpmath==1.3.0
    networkx==3.6.1
    jinja2==3.1.6
    MarkupSafe==3.0.4
    fsspec==2026.9.0
    setuptools==84.2.1
    # NVIDIA runtime libraries that `import torch` loads (no GPU needed).
    nvidia-cuda-runtime==13.2.86
    nvidia-cuda-cupti==13.2.86
    nvidia-cuda-nvrtc==13.2.86
    nvidia-cublas==13.4.1.3
    nvidia-cufft==12.2.0.57
    nvidia-cufile==1.17.1.22
    nvidia-cusparse==12.7.10.12
    nvidia-cudnn-cu13==9.26.0.51
    nvidia-cusparselt-cu13==0.8.1
    nvidia-nccl-cu13==2.30.7
    nvidia-nvshmem-cu13==3.7.2
    # What torch_reference.py needs besides torch.
    numpy==2.4.6
    safetensors==0.8.0
    # The model zoo's reference networks (tests/integration/zoo.rs, cnn import),
    # and the photo pipeline's peer (scripts/torch_photos.py).
    torchvision==0.29.2
    pillow==13.0.0
    # timm's networks of the zoo's families (timm.create_model needs none of
    # its optional dependencies: pyyaml and huggingface_hub stay out).
    timm==1.0.31
)

SMOKE='import torch; torch.set_num_threads(2); print(torch.randn(2, 2) @ torch.randn(2, 2))'

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: torch ${PACKAGES[0]#torch==} needs Python >= 3.11; '$PYTHON' is $("$PYTHON" --version 2>&1 || echo missing)." >&2
    echo "       Point PYTHON at a newer interpreter, e.g. PYTHON=python3.12 $0" >&2
    exit 1
fi

exec 3>&1 1>&2
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating venv $VENV"
    "$PYTHON" -m venv "$VENV"
fi

# The stamp records the package list last installed; rerunning with the same
# list and a working torch does nothing.
STAMP="$VENV/.cnn-torch-packages"
WANTED=$(printf '%s\n' "${PACKAGES[@]}")
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANTED" ] \
    && "$VENV/bin/python" -c "$SMOKE" >/dev/null 2>&1; then
    echo "$VENV is up to date"
else
    echo "installing ${#PACKAGES[@]} pinned packages into $VENV (~2.4 GB to download, ~4 GB installed)"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --no-deps "${PACKAGES[@]}"
    printf '%s\n' "$WANTED" >"$STAMP"
fi

echo "smoke test:"
"$VENV/bin/python" -c "$SMOKE"
# One optimizer step too: torch.optim pulls in torch._dynamo, hence sympy.
"$VENV/bin/python" -c '
import numpy, safetensors, timm, torch, torchvision
w = torch.zeros(3, requires_grad=True)
opt = torch.optim.Adam([w])
(w - 1).square().sum().backward()
opt.step()
print(f"torch {torch.__version__} (CUDA available: {torch.cuda.is_available()}), torchvision {torchvision.__version__}, timm {timm.__version__}, numpy {numpy.__version__}, safetensors {safetensors.__version__}")'
du -sh "$VENV"
echo "$(cd "$VENV" && pwd)/bin/python" >&3
