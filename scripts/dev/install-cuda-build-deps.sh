#!/usr/bin/env bash
# Install what `cargo build --release --features cuda` (and, with --cudnn,
# `--features cudnn`) needs on a Debian 12 x86_64 machine that has no CUDA
# toolkit, no NVIDIA driver and no GPU: nvcc, the CUDA headers, the CUDA
# libraries to link against, and a link stub for the driver library libcuda.
#
# Usage:
#   scripts/dev/install-cuda-build-deps.sh [--cudnn] [--env-only]
#   eval "$(scripts/dev/install-cuda-build-deps.sh)"     # install + export the env
#   . "${CNN_CUDA_HOME:-$HOME/.cache/cnn/cuda}/env.sh"  # later shells
#
# Everything goes into one toolkit-like prefix, ${CNN_CUDA_HOME}
# (default ~/.cache/cnn/cuda): bin/ (nvcc ...), nvvm/, include/, lib64/
# (lib -> lib64), lib64/stubs/libcuda.so. Nothing is installed system-wide and
# the system apt configuration is not touched.
#
# Progress goes to stderr; stdout carries only `export` lines, so the output
# can be eval'ed. A second run finds its stamps and downloads nothing.
#
# Where the pieces come from (all pinned; CUDA 12.4 throughout):
#  * PyPI NVIDIA wheels (pip download --require-hashes): headers and
#    libcudart / libcublas / libcublasLt / libcurand / libnvrtc (+ cuDNN 9.1).
#    This is the exact set PyTorch 2.5.1+cu124 ships. The cu12 nvcc wheels
#    contain only ptxas, libnvvm and the crt/ headers: no `nvcc` driver, no
#    cicc, no cudafe++, no fatbinary (only the CUDA 13 wheels have those).
#  * Debian trixie non-free `nvidia-cuda-toolkit` 12.4.131 (apt-get download
#    through a private, throw-away apt configuration; apt checks the signed
#    index): nvcc, cicc, cudafe++, fatbinary, nvlink, ptxas, bin2c, libdevice.
#    These are NVIDIA's prebuilt binaries (need glibc >= 2.34; bookworm: 2.36).
#  * libcuda.so: no wheel ships the driver stub, so a stub is compiled here
#    from cuda.h (every cu* entry point returns CUDA_ERROR_STUB_LIBRARY = 34),
#    with SONAME libcuda.so.1. It lives in lib64/stubs, which must only be on
#    the *link* path (LIBRARY_PATH), never on LD_LIBRARY_PATH of a GPU machine.
#
# Why 12.4: candle's kernels are embedded as PTX and JIT-compiled by the
# driver, so the PTX ISA emitted by nvcc must not be newer than the driver
# (nvcc 12.4 -> PTX 8.4 -> any driver >= 550 / CUDA 12.4). CUDA 13 would need a
# >= 580 driver. cudarc (cuda-version-from-build-system) reads `nvcc --version`
# and picks its cuda-12040 bindings.
#
# Environment knobs:
#   CNN_CUDA_HOME           prefix (default ~/.cache/cnn/cuda)
#   CNN_CUDA_WITH_CUDNN=1   same as --cudnn (adds 634 MiB download, ~1 GiB disk)
#   CNN_CUDA_KEEP_DOWNLOADS=1  keep the .whl/.deb files under $CNN_CUDA_HOME/.downloads
#   CUDA_COMPUTE_CAP        exported value (default 90 = H100/H200); candle's
#                           build otherwise runs nvidia-smi to detect it
set -euo pipefail

PREFIX=${CNN_CUDA_HOME:-$HOME/.cache/cnn/cuda}
WITH_CUDNN=${CNN_CUDA_WITH_CUDNN:-0}
KEEP_DOWNLOADS=${CNN_CUDA_KEEP_DOWNLOADS:-0}
COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
ENV_ONLY=0

for arg in "$@"; do
    case "$arg" in
        --cudnn) WITH_CUDNN=1 ;;
        --no-cudnn) WITH_CUDNN=0 ;;
        --env-only) ENV_ONLY=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//; $d'; exit 0 ;;
        *) echo "install-cuda-build-deps: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

log() { printf '[cuda-deps] %s\n' "$*" >&2; }
die() { printf '[cuda-deps] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- pins -----
CUDA_VERSION=12.4
# name==version sha256 (manylinux2014_x86_64 wheels)
PY_WHEELS_BASE=(
    "nvidia-cuda-nvcc-cu12==12.4.131 e4c9a35435c3b0e36c6397c5696334c9ea6650e524736cbd1c5d345ea099bb04"
    "nvidia-cuda-runtime-cu12==12.4.127 64403288fa2136ee8e467cdc9c9427e0434110899d07c779f25b5c068934faa5"
    "nvidia-cuda-cccl-cu12==12.4.127.post1 2027fa5fc75fbee703bf24e8275a40a605cf94a3e8fef8a7187897d49b34facb"
    "nvidia-cuda-nvrtc-cu12==12.4.127 a178759ebb095827bd30ef56598ec182b85547f1508941a3d560eb7ea1fbf338"
    "nvidia-cublas-cu12==12.4.5.8 2fc8da60df463fdefa81e323eef2e36489e1c94335b5358bcb38360adf75ac9b"
    "nvidia-curand-cu12==10.3.5.147 a88f583d4e0bb643c49743469964103aa59f7f708d862c3ddb0fc07f851e3b8b"
)
PY_WHEELS_CUDNN=(
    "nvidia-cudnn-cu12==9.1.0.70 165764f44ef8c61fcdfdfdbe769d687e06374059fbb388b6c89ecb0e28793a6f"
)
DEB_SUITE="trixie"
DEB_COMPONENT="non-free"
DEB_MIRROR="http://deb.debian.org/debian"
DEB_PKG="nvidia-cuda-toolkit"
DEB_VERSION="12.4.131~12.4.1-2"
DEB_SHA256="cd5fe85aee38d108b315f408a688641478f2402622a10c677478eb7a6c4e5319"

STAMPS="$PREFIX/.stamps"
DL="$PREFIX/.downloads"
STAGE="$PREFIX/.staging"

stamp_ok() { [ -f "$STAMPS/$1" ]; }
stamp_set() { mkdir -p "$STAMPS"; : > "$STAMPS/$1"; }
human() { numfmt --to=iec-i --suffix=B "$1" 2>/dev/null || echo "$1 bytes"; }

DOWNLOADED_BYTES=0
add_download() { DOWNLOADED_BYTES=$((DOWNLOADED_BYTES + $(stat -c %s "$1"))); }

# ----------------------------------------------------------- pip wheels ----
# $1: stamp name, rest: "name==version sha256" entries
install_wheels() {
    local stamp=$1; shift
    local name spec sha
    local todo=()
    for spec in "$@"; do
        name=${spec%% *}
        stamp_ok "whl-$name" || todo+=("$spec")
    done
    [ ${#todo[@]} -eq 0 ] && return 0
    command -v python3 >/dev/null || die "python3 (with pip) is required"
    command -v unzip >/dev/null || die "unzip is required (apt-get install unzip)"
    mkdir -p "$DL/wheels"
    local req="$DL/wheels/requirements-$stamp.txt"
    : > "$req"
    for spec in "${todo[@]}"; do
        name=${spec%% *}; sha=${spec##* }
        echo "$name --hash=sha256:$sha" >> "$req"
    done
    log "pip download (${#todo[@]} wheels: $(printf '%s ' "${todo[@]%% *}"))"
    local t0=$SECONDS
    # --platform/--python-version: fetch the manylinux wheels whatever the
    # local interpreter; --require-hashes: pinned content.
    env -u PIP_FIND_LINKS python3 -m pip download --quiet --no-cache-dir --no-deps --only-binary=:all: \
        --platform manylinux2014_x86_64 --python-version 3.11 \
        --require-hashes -r "$req" -d "$DL/wheels" >&2 \
        || die "pip download failed (see above)"
    log "pip download done in $((SECONDS - t0)) s"
    for spec in "${todo[@]}"; do
        name=${spec%% *}
        local dist=${name%%==*} ver=${name##*==}
        local whl
        whl=$(ls "$DL/wheels/${dist//-/_}-${ver}-"*.whl 2>/dev/null | head -n1)
        [ -n "$whl" ] || die "wheel for $name not found after download"
        add_download "$whl"
        rm -rf "$STAGE"; mkdir -p "$STAGE"
        unzip -q -o "$whl" 'nvidia/*' -d "$STAGE"
        local comp
        for comp in "$STAGE"/nvidia/*/; do
            [ -d "$comp" ] || continue
            [ -d "$comp/include" ] && cp -a "$comp/include/." "$PREFIX/include/"
            [ -d "$comp/lib" ] && cp -a "$comp/lib/." "$PREFIX/lib64/"
            [ -d "$comp/nvvm" ] && cp -a "$comp/nvvm/." "$PREFIX/nvvm/"
            # ptxas also comes from the .deb (identical 12.4 build); keep one
        done
        rm -rf "$STAGE"
        [ "$KEEP_DOWNLOADS" = 1 ] || rm -f "$whl"
        stamp_set "whl-$name"
    done
    rm -f "$req"
    find "$PREFIX/include" "$PREFIX/lib64" "$PREFIX/nvvm" -name '__init__.py' -delete
    find "$PREFIX/include" "$PREFIX/lib64" "$PREFIX/nvvm" -name '__pycache__' -prune -exec rm -rf {} +
}

# ------------------------------------------------------- Debian nvcc -------
install_nvcc_deb() {
    local stamp="deb-$DEB_PKG-$DEB_VERSION"
    stamp_ok "$stamp" && return 0
    command -v apt-get >/dev/null || die "apt-get is required (Debian/Ubuntu host)"
    local apt="$DL/apt"
    rm -rf "$apt"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$DL/debs"
    echo "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $DEB_MIRROR $DEB_SUITE $DEB_COMPONENT" > "$apt/sources.list"
    # A private apt configuration: only the small trixie/non-free index is
    # fetched, the system's sources and package state are left alone.
    local opts=(
        -o "Dir::Etc::SourceList=$apt/sources.list"
        -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::State::Lists=$apt/lists"
        -o "Dir::Cache=$apt/cache"
        -o "APT::Sandbox::User=root"
        -o "Debug::NoLocking=1"
    )
    log "apt-get download $DEB_PKG=$DEB_VERSION ($DEB_SUITE/$DEB_COMPONENT)"
    local t0=$SECONDS
    apt-get "${opts[@]}" -qq update >&2 || die "apt-get update of $DEB_SUITE/$DEB_COMPONENT failed"
    (cd "$DL/debs" && apt-get "${opts[@]}" -qq download "$DEB_PKG=$DEB_VERSION" >&2) \
        || die "apt-get download $DEB_PKG=$DEB_VERSION failed (version gone from $DEB_SUITE? update the pin)"
    log "apt-get download done in $((SECONDS - t0)) s"
    local deb
    deb=$(ls "$DL/debs/${DEB_PKG}_"*"_amd64.deb" | head -n1)
    echo "$DEB_SHA256  $deb" | sha256sum -c --quiet - >&2 || die "sha256 mismatch for $deb"
    add_download "$deb"
    rm -rf "$STAGE"; mkdir -p "$STAGE"
    dpkg-deb -x "$deb" "$STAGE"
    local tk="$STAGE/usr/lib/nvidia-cuda-toolkit"
    # The real nvcc driver (Debian's /usr/bin/nvcc is a wrapper script).
    install -m 0755 "$tk/bin/nvcc" "$PREFIX/bin/nvcc"
    mkdir -p "$PREFIX/bin/crt"
    cp -a "$tk/bin/crt/." "$PREFIX/bin/crt/"
    local b
    for b in cudafe++ fatbinary nvlink ptxas bin2c nvprune cu++filt cuobjdump; do
        install -m 0755 "$STAGE/usr/bin/$b" "$PREFIX/bin/$b"
    done
    mkdir -p "$PREFIX/nvvm/bin" "$PREFIX/nvvm/libdevice"
    install -m 0755 "$tk/bin/cicc" "$PREFIX/nvvm/bin/cicc"
    cp -a "$tk/libdevice/." "$PREFIX/nvvm/libdevice/"
    rm -rf "$STAGE" "$apt"
    [ "$KEEP_DOWNLOADS" = 1 ] || rm -f "$deb"
    stamp_set "$stamp"
}

# --------------------------------------------- layout, profile, stub -------
finish_layout() {
    # Toolkit-style nvcc.profile: nvcc finds it next to its own binary.
    cat > "$PREFIX/bin/nvcc.profile" <<'EOF'

TOP              = $(_HERE_)/..

CICC_PATH        = $(TOP)/nvvm/bin
CICC_NEXT_PATH   = $(TOP)/nvvm/bin
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice

LD_LIBRARY_PATH += $(TOP)/lib64:
PATH            += $(TOP)/nvvm/bin:$(_HERE_):

INCLUDES        +=  "-I$(TOP)/include" $(_SPACE_)

LIBRARIES        =+ $(_SPACE_) "-L$(TOP)/lib64/stubs" "-L$(TOP)/lib64"

CUDAFE_FLAGS    +=
PTXAS_FLAGS     +=
EOF
    # Unversioned names for the linker (the wheels ship only libfoo.so.N).
    local f base
    for f in "$PREFIX"/lib64/lib*.so.[0-9]*; do
        [ -f "$f" ] || continue
        base=$(basename "$f"); base=${base%%.so.*}.so
        [ -e "$PREFIX/lib64/$base" ] || ln -s "$(basename "$f")" "$PREFIX/lib64/$base"
    done
    [ -e "$PREFIX/lib" ] || ln -s lib64 "$PREFIX/lib"
    [ -e "$PREFIX/nvvm/lib64/libnvvm.so" ] && [ ! -e "$PREFIX/nvvm/lib64/libnvvm.so.4" ] \
        && ln -s libnvvm.so "$PREFIX/nvvm/lib64/libnvvm.so.4"

    if ! stamp_ok "stub-libcuda-$CUDA_VERSION"; then
        command -v cc >/dev/null || die "a C compiler (gcc) is required"
        log "building lib64/stubs/libcuda.so from cuda.h"
        mkdir -p "$PREFIX/lib64/stubs"
        local src="$PREFIX/lib64/stubs/.libcuda-stub.c"
        {
            echo "/* Generated link stub: every driver entry point returns CUDA_ERROR_STUB_LIBRARY. */"
            # cudaProfiler.h is not in the wheels: add its three entry points.
            { printf '#include <cuda.h>\n' \
                | cc -E -P -I"$PREFIX/include" -x c - \
                | tr '\n' ' ' | tr ';' '\n' \
                | sed -nE 's/^(.*[ )])?CUresult +(cu[A-Za-z0-9_]+) *\(.*/\2/p'
              printf '%s\n' cuProfilerInitialize cuProfilerStart cuProfilerStop; } \
                | sort -u \
                | sed 's/.*/int &(void) { return 34; }/'
        } > "$src"
        local n; n=$(grep -c 'return 34' "$src")
        [ "$n" -gt 400 ] || die "libcuda stub: only $n symbols extracted from cuda.h"
        cc -shared -fPIC -O0 -w -Wl,-soname,libcuda.so.1 -o "$PREFIX/lib64/stubs/libcuda.so" "$src"
        ln -sf libcuda.so "$PREFIX/lib64/stubs/libcuda.so.1"
        rm -f "$src"
        log "libcuda stub: $n symbols"
        stamp_set "stub-libcuda-$CUDA_VERSION"
    fi
}

print_env() {
    cat <<EOF
export CUDA_HOME="$PREFIX"
export CUDA_PATH="$PREFIX"
export CUDA_ROOT="$PREFIX"
export CUDA_TOOLKIT_ROOT_DIR="$PREFIX"
export NVCC="$PREFIX/bin/nvcc"
export CUDA_COMPUTE_CAP="$COMPUTE_CAP"
export PATH="$PREFIX/bin\${PATH:+:\$PATH}"
export LIBRARY_PATH="$PREFIX/lib64:$PREFIX/lib64/stubs\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
export LD_LIBRARY_PATH="$PREFIX/lib64\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
EOF
}

# ----------------------------------------------------------------- main ----
if [ "$ENV_ONLY" = 1 ]; then
    [ -x "$PREFIX/bin/nvcc" ] || die "$PREFIX is not installed yet (run without --env-only)"
    print_env
    exit 0
fi

T_START=$SECONDS
mkdir -p "$PREFIX/bin" "$PREFIX/include" "$PREFIX/lib64" "$PREFIX/nvvm"
WHEELS=("${PY_WHEELS_BASE[@]}")
[ "$WITH_CUDNN" = 1 ] && WHEELS+=("${PY_WHEELS_CUDNN[@]}")

install_wheels base "${WHEELS[@]}"
install_nvcc_deb
finish_layout
rmdir "$DL/wheels" "$DL/debs" "$DL" 2>/dev/null || true

# Smoke test: the toolkit answers and reports the pinned release.
NVCC_VER=$("$PREFIX/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')
[ "$NVCC_VER" = "$CUDA_VERSION" ] || die "nvcc reports release '$NVCC_VER', expected $CUDA_VERSION"
for lib in cudart cublas cublasLt curand nvrtc; do
    [ -e "$PREFIX/lib64/lib$lib.so" ] || die "missing $PREFIX/lib64/lib$lib.so"
done
if [ "$WITH_CUDNN" = 1 ] || [ -e "$PREFIX/lib64/libcudnn.so" ]; then
    [ -e "$PREFIX/include/cudnn.h" ] || die "missing cudnn.h"
    CUDNN_NOTE="cuDNN 9.1.0.70: yes"
else
    CUDNN_NOTE="cuDNN: not installed (pass --cudnn for --features cudnn)"
fi
print_env > "$PREFIX/env.sh"

log "CUDA $NVCC_VER build prefix ready: $PREFIX ($CUDNN_NOTE)"
if [ "$DOWNLOADED_BYTES" -gt 0 ]; then
    log "downloaded this run: $(human "$DOWNLOADED_BYTES") in $((SECONDS - T_START)) s"
else
    log "nothing to download (already installed)"
fi
log "disk used by prefix: $(du -sh "$PREFIX" | cut -f1)"
log "env (also in $PREFIX/env.sh; eval this script's stdout or source that file):"
print_env
