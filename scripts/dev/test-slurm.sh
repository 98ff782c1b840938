#!/usr/bin/env bash
# test-slurm.sh -- prove the --slurm path of scripts/sweep.sh on a real Slurm.
#
# Starts a throw-away single-node cluster on this machine with
# scripts/dev/slurm-local.sh (as root: it installs Debian's slurm-wlm and munge
# when missing and runs the daemons without systemd), then:
#   1. submits a 2×2 sweep (lr × batch size, mlp, 1 epoch on 300 images of
#      tests/fixtures/mnist-small) as a job array with --slurm --wait and
#      checks with `cnn report --json` that all 4 points are done;
#   2. deletes one point's run directory and marks another failed, re-runs
#      the same command and checks that only those two indices are submitted
#      and that the other points are not trained again;
#   3. submits a slower sweep, checks that re-running while it is queued
#      submits nothing, cancels the array midway (scancel: SIGTERM, cnn saves
#      and exits 130), re-submits, and checks every point ends with exactly
#      its epochs, resumed rather than restarted;
#   4. when cnn was built with --features mpi: trains LeNet as 2 ranks with
#      `srun -n 2` and checks the checkpoint's tensors against one process's,
#      bit for bit, then runs a sweep of 2-rank points (sweep.sh -n 2 --slurm)
#      and checks each point is a 2-rank run with one process's bits.
# The cluster is stopped at the end unless it was already running.
#
# Usage (as root, from anywhere):
#   cargo build --release && scripts/dev/test-slurm.sh
# Environment: CNN (the binary; default target/release/cnn), KEEP=1 keeps the
# work directory, SLURM_LOCAL (default: slurm-local.sh beside this script),
# SLURM_LOCAL_DIR as for slurm-local.sh.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$(dirname "$HERE")")
CNN=${CNN:-$REPO/target/release/cnn}
export CNN
SLURM_LOCAL=${SLURM_LOCAL:-$HERE/slurm-local.sh}
T0=$SECONDS

log() { printf '[test-slurm %3ss] %s\n' "$((SECONDS - T0))" "$*" >&2; }
fail() {
    log "FAIL: $*"
    exit 1
}

[[ -x $CNN ]] || fail "no cnn binary at $CNN: run 'cargo build --release' first (or set CNN=PATH)"
[[ $(id -u) -eq 0 ]] || fail "run as root: slurm-local.sh installs packages and starts daemons"
command -v jq >/dev/null || fail "jq is needed to read the report (apt-get install jq)"
[[ -x $SLURM_LOCAL ]] || fail "no $SLURM_LOCAL (set SLURM_LOCAL=PATH to scripts/dev/slurm-local.sh)"

started_here=0
if ! "$SLURM_LOCAL" status >/dev/null 2>&1; then
    started_here=1
fi
"$SLURM_LOCAL" start >&2
WORK=$(mktemp -d /tmp/cnn-test-slurm.XXXXXX)
cleanup() {
    local rc=$?
    if [[ -n ${job:-} ]]; then scancel "$job" 2>/dev/null || true; fi
    if ((started_here)); then "$SLURM_LOCAL" stop >&2 || true; fi
    if [[ ${KEEP:-0} == 1 || $rc -ne 0 ]]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    ((rc == 0)) && log "PASS in $((SECONDS - T0))s"
}
trap cleanup EXIT
cd "$REPO"

TRAIN=(-- --data-dir tests/fixtures/mnist-small --limit-train 300 --limit-test 200
    --set data.val_size=200 --device cpu)
AXES=("training.optimizer.lr=0.001,0.01" "training.batch_size=64,128")

report() { "$CNN" report "$1" --json; }
count_status() { report "$1" | jq --arg s "$2" '[.[] | select(.status == $s)] | length'; }
array_of() { sed -n 's/^#SBATCH --array=//p' "$1/slurm/sweep.sbatch"; }
fresh_starts() { awk -F'\t' '$6 == "fresh"' "$1/sweep.log" | wc -l; }

# ---------------------------------------------------------------- 1
S1=$WORK/grid
log "1. a 2×2 sweep as a job array (sbatch --wait)"
scripts/sweep.sh --base configs/mlp.json --out "$S1" --retries 0 "${AXES[@]}" \
    --slurm --wait --cpus-per-task=1 --time=10 "${TRAIN[@]}" --epochs 1 >"$WORK/1.out" ||
    fail "the sweep failed: $(cat "$WORK/1.out")"
cat "$WORK/1.out" >&2
[[ $(array_of "$S1") == 0-3 ]] || fail "expected --array=0-3, got $(array_of "$S1")"
[[ $(count_status "$S1" "done") == 4 ]] || fail "not all 4 points are done: $(report "$S1")"
[[ $(report "$S1" | jq '[.[] | select(.best_val_acc > 0.3)] | length') == 4 ]] ||
    fail "some point did not learn: $(report "$S1")"
outs=("$S1"/slurm/*_*.out)
((${#outs[@]} == 4)) || fail "expected 4 task outputs, got ${#outs[@]}"
log "   4 array tasks, all done"

# ---------------------------------------------------------------- 2
log "2. re-submission sends only the unfinished points"
name1=$(jq -r '.points[1].name' "$S1/manifest.json")
name3=$(jq -r '.points[3].name' "$S1/manifest.json")
rm -rf "$S1/runs/$name1"
sed -i 's/"status": "done"/"status": "failed"/' "$S1/runs/$name3/status.json"
[[ $(count_status "$S1" failed) == 1 ]] || fail "marking a point failed did not show in the report"
before=$(fresh_starts "$S1")
rc=0
scripts/sweep.sh --base configs/mlp.json --out "$S1" --retries 0 "${AXES[@]}" \
    --slurm --wait --time=10 "${TRAIN[@]}" --epochs 1 >"$WORK/2.out" 2>"$WORK/2.err" || rc=$?
((rc == 1)) || fail "expected exit 1 (a failed point, not retried), got $rc: $(cat "$WORK/2.err")"
grep -q 'submitting 2 of 4 points' "$WORK/2.err" || fail "expected 2 of 4 points: $(cat "$WORK/2.err")"
[[ $(array_of "$S1") == 1,3 ]] || fail "expected --array=1,3, got $(array_of "$S1")"
# --retries 0: the failed point is reported, not retried; the deleted one runs again.
[[ $(count_status "$S1" "done") == 3 ]] || fail "expected 3 done: $(report "$S1")"
[[ $(report "$S1" | jq -r '.[] | select(.status == "failed") | .run') == "$name3" ]] ||
    fail "$name3 should still be failed: $(report "$S1")"
(($(fresh_starts "$S1") == before + 1)) || fail "expected exactly one new fresh start"
log "   only indices 1,3 submitted; the deleted point ran, the failed one was reported"
scripts/sweep.sh --base configs/mlp.json --out "$S1" --retries 1 "${AXES[@]}" \
    --slurm --wait --time=10 "${TRAIN[@]}" --epochs 1 >/dev/null 2>"$WORK/2b.err" ||
    fail "retrying the failed point failed: $(cat "$WORK/2b.err")"
[[ $(array_of "$S1") == 3 ]] || fail "expected --array=3, got $(array_of "$S1")"
[[ $(count_status "$S1" "done") == 4 ]] || fail "expected 4 done: $(report "$S1")"
log "   with --retries 1 the failed point was retried: 4 done"

# ---------------------------------------------------------------- 3
S2=$WORK/cancel
SLOW=(--epochs 3 --set layers.1.out_features=1500 --checkpoint-every 2)
log "3. cancel an array midway, re-submit, every point finishes exactly once"
scripts/sweep.sh --base configs/mlp.json --out "$S2" training.optimizer.lr=0.001,0.0005 \
    training.batch_size=16,32 --slurm --cpus-per-task=1 --time=10 "${TRAIN[@]}" "${SLOW[@]}" \
    2>"$WORK/3.err" || fail "submission failed: $(cat "$WORK/3.err")"
job=$(tail -n 1 "$S2/slurm/jobs")
scripts/sweep.sh --base configs/mlp.json --out "$S2" training.optimizer.lr=0.001,0.0005 \
    training.batch_size=16,32 --slurm --cpus-per-task=1 --time=10 "${TRAIN[@]}" "${SLOW[@]}" \
    2>"$WORK/3b.err" || fail "re-running while queued failed: $(cat "$WORK/3b.err")"
grep -q 'nothing to submit' "$WORK/3b.err" || fail "re-running while queued submitted again: $(cat "$WORK/3b.err")"
[[ $(wc -l <"$S2/slurm/jobs") == 1 ]] || fail "a second job was submitted"
for _ in $(seq 600); do
    compgen -G "$S2/runs/*/last.safetensors" >/dev/null && break
    sleep 0.1
done
compgen -G "$S2/runs/*/last.safetensors" >/dev/null || fail "no point checkpointed within 60 s"
log "   cancelling job $job midway"
scancel "$job"
for _ in $(seq 300); do
    [[ -z $(squeue -h -j "$job" 2>/dev/null) ]] && break
    sleep 0.1
done
job=""
interrupted=$(count_status "$S2" interrupted)
done_before=$(count_status "$S2" "done")
log "   after scancel: $done_before done, $interrupted interrupted"
((interrupted >= 1)) || fail "no point was interrupted: $(report "$S2")"
scripts/sweep.sh --base configs/mlp.json --out "$S2" training.optimizer.lr=0.001,0.0005 \
    training.batch_size=16,32 --slurm --wait --cpus-per-task=1 --time=10 "${TRAIN[@]}" "${SLOW[@]}" \
    >/dev/null 2>"$WORK/3c.err" || fail "re-submission failed: $(cat "$WORK/3c.err")"
[[ $(count_status "$S2" "done") == 4 ]] || fail "expected 4 done: $(report "$S2")"
for run in "$S2"/runs/*/; do
    epochs=$(jq -r '[.[].epoch] | map(tostring) | join(",")' "$run/history.json")
    [[ $epochs == 1,2,3 ]] || fail "$run trained epochs $epochs"
    batch=$(jq -r '.training.batch_size' "$run/config.json")
    per_epoch=$(((300 + batch - 1) / batch))
    steps=$((per_epoch * 3))
    want=$(seq -s, 1 "$steps")
    got=$(tail -n +2 "$run/steps.csv" | cut -d, -f1 | paste -sd,)
    [[ $got == "$want" ]] || fail "$run: steps.csv does not hold steps 1..$steps once each"
done
(($(fresh_starts "$S2") == 4)) || fail "a point was started from scratch twice"
grep -q $'\tresume$' "$S2/sweep.log" || fail "nothing was resumed"
log "   all 4 done, each with epochs 1,2,3 and every step once; interrupted points resumed"
# ---------------------------------------------------------------- 4
same_tensors() { python3 scripts/dev/same-tensors.py "$1" "$2" >/dev/null; } # bit for bit, metadata aside
if "$CNN" --version | grep -qE '^features:.*\bmpi\b'; then
    log "4. a 2-rank run under srun, against one process"
    D4=$WORK/ranks
    mkdir -p "$D4"
    LENET=(train --config configs/lenet.json --data-dir tests/fixtures/mnist-small --limit-train 960
        --limit-test 200 --set data.val_size=200 --epochs 1 --quiet)
    "$CNN" --threads 1 "${LENET[@]}" --out "$D4/one" || fail "one process failed"
    srun -n 2 --cpus-per-task=1 --time=10 --kill-on-bad-exit=1 \
        "$CNN" --threads 1 "${LENET[@]}" --distributed mpi --out "$D4/two" 2>"$WORK/4.err" ||
        fail "srun -n 2 failed: $(cat "$WORK/4.err")"
    same_tensors "$D4/one/last.safetensors" "$D4/two/last.safetensors" ||
        fail "2 ranks under srun wrote other weights than one process"
    [[ $(jq -r '.ranks' <(python3 -c 'import json,struct,sys
f=open(sys.argv[1],"rb");n=struct.unpack("<Q",f.read(8))[0];print(json.loads(f.read(n))["__metadata__"]["state"])' "$D4/two/last.safetensors")) == 2 ]] ||
        fail "the checkpoint does not record 2 ranks"
    log "   srun -n 2: the same tensors as one process"
    S3=$WORK/sweep-ranks
    scripts/sweep.sh --base configs/lenet.json --out "$S3" -n 2 --retries 0 training.optimizer.lr=0.001,0.002 \
        --slurm --wait --cpus-per-task=1 --time=10 -- --data-dir tests/fixtures/mnist-small --limit-train 960 \
        --limit-test 200 --set data.val_size=200 --epochs 1 >/dev/null 2>"$WORK/4b.err" ||
        fail "the 2-rank sweep failed: $(cat "$WORK/4b.err")"
    grep -q -- '--ntasks=2' "$S3/slurm/sweep.sbatch" || fail "the array tasks do not ask for 2 tasks"
    [[ $(count_status "$S3" "done") == 2 ]] || fail "expected 2 done: $(report "$S3")"
    for run in "$S3"/runs/*/; do
        name=$(basename "$run")
        grep -q 'distributed over 2 ranks' "$S3/logs/$name.log" || fail "$name did not run on 2 ranks"
        lr=$(jq -r '.training.optimizer.lr' "$run/config.json")
        "$CNN" --threads 1 "${LENET[@]}" --lr "$lr" --out "$D4/$name" || fail "one process of $name failed"
        same_tensors "$D4/$name/last.safetensors" "$run/last.safetensors" ||
            fail "$name: the 2-rank point wrote other weights than one process"
    done
    log "   a sweep of 2-rank points: each done, each with one process's tensors"
else
    log "4. skipped: $CNN was built without --features mpi"
fi

"$CNN" report "$S1" >&2
