#!/usr/bin/env bash
# Runs the book's examples: every ```sh block of the tutorial (in the order
# of docs/src/SUMMARY.md), of "Reading CNN_PROFILE" and of the README's tour,
# as bash, in one scratch directory, with `cnn` on the PATH. A block after a
# line `<!-- doc-check: skip (why) -->` is left out (downloads, a GPU, a
# stopped run). So that the check takes minutes, not hours, `cnn` there is a
# wrapper that points the real data at the committed fixtures
# (../shared/data/mnist → tests/fixtures/mnist-small, data/cifar10 →
# tests/fixtures/cifar10-small), trains one epoch on at most 200 images, and
# holds a fifth of them for validation unless the command says otherwise.
#
#   scripts/dev/doc-check.sh [--cnn PATH]     (default: the debug build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo=$PWD
target=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')}
real=$target/debug/cnn
[[ ${1:-} == --cnn ]] && real=$(realpath "$2")
[[ -x $real ]] || { echo "doc-check: no cnn binary at $real (cargo build, or --cnn PATH)" >&2; exit 2; }

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/bin"
# A work directory laid out as the repository: the tutorial's pages share
# one (each chapter uses the runs of the ones before), the README its own.
workdir() {
    mkdir -p "$scratch/$1/tests"
    ln -sfn "$repo/configs" "$scratch/$1/configs"
    ln -sfn "$repo/scripts" "$scratch/$1/scripts"
    ln -sfn "$repo/tests/fixtures" "$scratch/$1/tests/fixtures"
}
workdir book
workdir readme

cat > "$scratch/bin/cnn" <<WRAPPER
#!/usr/bin/env bash
# doc-check's cnn: the real one on the fixtures, briefly.
fixtures=$repo/tests/fixtures
out=(); train=0; after_dashdash=0; seen_limit=0; seen_val=0; prev=""
for a in "\$@"; do
    case "\$prev" in
        --epochs) a=1 ;;
        --limit-train) a=200; seen_limit=1 ;;
        --data-dir)
            case "\$a" in
                ../shared/data/mnist) a=\$fixtures/mnist-small ;;
                data/cifar10) a=\$fixtures/cifar10-small ;;
            esac ;;
    esac
    [[ \$a == *data.val_size* ]] && seen_val=1
    [[ \$a == --resume ]] && train=2
    [[ \$a == -- ]] && after_dashdash=1
    out+=("\$a"); prev=\$a
done
first=""
for a in "\$@"; do [[ \$a != -* ]] && { first=\$a; break; }; done
if [[ \$first == train || \$first == lr-find || (\$first == sweep && \$after_dashdash == 1) ]] && [[ \$train != 2 ]]; then
    [[ \$first == sweep || " \$* " == *" --epochs "* ]] || out+=(--epochs 1)
    [[ \$seen_limit == 1 ]] || out+=(--limit-train 200 --limit-test 100)
    [[ \$seen_val == 1 ]] || out+=(--set data.val_size=0.2)
fi
exec "$real" "\${out[@]}"
WRAPPER
chmod +x "$scratch/bin/cnn"

# The pages, in reading order.
pages=()
while read -r p; do pages+=("docs/src/$p"); done < <(grep -o 'tutorial/[a-z0-9-]*\.md' docs/src/SUMMARY.md)
pages+=(docs/src/profiling.md README.md)

failed=0; ran=0
for page in "${pages[@]}"; do
    # Each runnable block as "LINE<TAB>script" records separated by NUL.
    while IFS= read -r -d '' record; do
        line=${record%%$'\t'*}; script=${record#*$'\t'}
        # The README's two fresh-machine commands build and test the project.
        [[ $script == *"cargo run"* || $script == *"scripts/test.sh"* || $script == *"cargo install"* ]] && continue
        ran=$((ran + 1))
        printf 'doc-check: %s:%s\n' "$page" "$line" >&2
        work=book; [[ $page == README.md ]] && work=readme
        if ! (cd "$scratch/$work" && PATH=$scratch/bin:$PATH CNN=$scratch/bin/cnn \
            bash -euo pipefail -c "$script") > "$scratch/out" 2>&1; then
            echo "doc-check: FAILED $page:$line:" >&2
            sed 's/^/    /' "$scratch/out" | tail -20 >&2
            failed=$((failed + 1))
        elif [[ -n ${DOC_CHECK_VERBOSE:-} ]]; then
            sed 's/^/    /' "$scratch/out" >&2
        fi
    done < <(awk -v skipmark='<!-- doc-check: skip' '
        index($0, skipmark) == 1 { skip = 1; next }
        /^```sh$/ && !inblock { inblock = 1; start = NR + 1; buf = ""; next }
        /^```/ && inblock {
            inblock = 0
            if (!skip) printf "%d\t%s%c", start, buf, 0
            skip = 0; next
        }
        inblock { buf = buf $0 "\n"; next }
        /^```/ { skip = 0 }
    ' "$page")
done
echo "doc-check: $ran blocks run, $failed failed" >&2
[[ $failed == 0 ]]
