#!/usr/bin/env bash
# Creates (idempotently) the Python virtual environment with ONNX Runtime that
# checks `cnn export` (tests/integration/export.rs, through
# scripts/dev/onnx_compare.py) and runs the ONNX side of
# scripts/predict-bench.sh. Everything comes from PyPI, pinned, with
# --no-deps: about 60 MB to download, 250 MB installed. Prints the venv's
# python on stdout (and nothing else), so callers can run
#
#   python=$(scripts/dev/onnx-venv.sh)
#
#   CNN_ONNX_VENV   where the venv lives (default ~/.cache/cnn/onnx-venv,
#                   outside the repository so that cargo clean keeps it)
#   PYTHON          the interpreter to make it with (default python3, >= 3.11)
#
# Several test processes may call this at once: a lock beside the venv makes
# one of them install while the others wait.
set -euo pipefail

VENV=${CNN_ONNX_VENV:-$HOME/.cache/cnn/onnx-venv}
PYTHON=${PYTHON:-python3}

PACKAGES=(
    onnxruntime==1.32.0
    # ONNX's own checker (onnx.checker.check_model with shape inference).
    onnx==1.23.2
    numpy==2.4.6
    # Decoding PNG files in scripts/predict-bench.sh.
    pillow==13.0.0
    # What those need.
    protobuf==7.36.2
    flatbuffers==25.12.19
    packaging==26.4
    ml_dtypes==0.6.0
    typing_extensions==4.16.0
)

SMOKE='import numpy, onnx, onnxruntime, PIL; onnxruntime.InferenceSession'

mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9

STAMP="$VENV/.cnn-onnx-packages"
WANTED=$(printf '%s\n' "${PACKAGES[@]}")
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANTED" ] &&
    "$VENV/bin/python" -c "$SMOKE" >/dev/null 2>&1; then
    echo "$VENV/bin/python"
    exit 0
fi

if ! "$PYTHON" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "onnx-venv.sh: needs Python >= 3.11 with venv and ensurepip; '$PYTHON' is" \
        "$("$PYTHON" --version 2>&1 || echo missing). Install one (Debian: apt-get install" \
        "python3-venv) or point PYTHON at it." >&2
    exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "onnx-venv.sh: creating $VENV" >&2
    "$PYTHON" -m venv "$VENV" >&2
fi
echo "onnx-venv.sh: installing ${#PACKAGES[@]} pinned packages into $VENV" >&2
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "${PACKAGES[@]}" >&2
"$VENV/bin/python" -c "$SMOKE" >&2
printf '%s\n' "$WANTED" >"$STAMP"
echo "$VENV/bin/python"
