#!/usr/bin/env bash
# gpu-check.sh -- everything a GPU machine is lent for, in one go (about 5 minutes
# on one H100): is cnn's CUDA path right, and how fast is it beside PyTorch CUDA.
#
#   scripts/gpu-check.sh OUT_DIR [--cnn PATH] [--mnist DIR] [--cifar DIR]
#                        [--cifar-limit N] [--cifar-val N] [--python PY]
#                        [--cpu] [--quick]
#
# Prepare here, run there: build with `scripts/build-cuda.sh --release`, copy the
# binary and the CUDA libraries it loads next to each other (see README, CUDA),
# carry MNIST and a CIFAR-10 folder along, then run this script on the GPU
# machine. It writes into OUT_DIR:
#   gpu-check.md    one markdown table of everything below
#   gpu-check.json  the same numbers, machine-readable
#   ops.json        `cnn check-device`: every layer output and gradient of one
#                   training step of each shipped config, CUDA against the CPU
#   runs/, logs/    the run directories and each command's output
#
# Steps:
#   1. the machine (GPU, driver, memory) and the op-by-op check;
#   2. LeNet (at its batch of 64 and at 512) and three-conv for 2 epochs on MNIST
#      and cifar10-cnn for 2 on CIFAR-10 (--cifar-limit training images,
#      --cifar-val held out, default 5000), on the GPU and on the CPU: test accuracy
#      side by side, training and evaluation images/s, and each checkpoint
#      evaluated on the other device (the same accuracy expected);
#   3. the same configs, batch sizes and optimizers in PyTorch CUDA
#      (scripts/torch_reference.py --device cuda), images/s beside cnn's;
#   4. failure modes: a GPU that is not there (cuda:7) and a batch that does not
#      fit in GPU memory must exit 2 or 1 with a message, no panic, no checkpoint.
#
# --cpu runs the same steps on this machine with the CPU standing in for the GPU
# (cnn's candle operations, CNN_KERNELS=candle, the code path CUDA takes) on
# small subsets; .ci/run runs it that way so the script is tested before any GPU
# time is spent. --quick cuts the data further (CI).
#
# Exit status: 0 when every check passed, 1 when one failed (the table says
# which), 2 for bad usage.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die() { printf 'gpu-check.sh: %s\n' "$*" >&2; exit 2; }

out="" cnn=${CNN:-} mnist=../shared/data/mnist cifar=data/cifar10 python=${PYTHON:-python3}
cpu=0 quick=0 cifar_limit=10000 cifar_val=5000
while [ $# -gt 0 ]; do
    case "$1" in
        --cnn) cnn=$2; shift 2 ;;
        --mnist) mnist=$2; shift 2 ;;
        --cifar) cifar=$2; shift 2 ;;
        --cifar-limit) cifar_limit=$2; shift 2 ;;
        --cifar-val) cifar_val=$2; shift 2 ;;
        --python) python=$2; shift 2 ;;
        --cpu) cpu=1; shift ;;
        --quick) quick=1; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $1 (try --help)" ;;
        *) [ -z "$out" ] || die "one OUT_DIR only"; out=$1; shift ;;
    esac
done
[ -n "$out" ] || die "give OUT_DIR (try --help)"
[ -z "$(ls -A "$out" 2>/dev/null)" ] || die "OUT_DIR $out is not empty; give a new or empty directory"
if [ -z "$cnn" ]; then
    for c in target/release/cnn ./cnn; do [ -x "$c" ] && { cnn=$c; break; }; done
fi
[ -n "$cnn" ] && [ -x "$cnn" ] || die "no cnn binary: pass --cnn PATH (scripts/build-cuda.sh --release builds one)"
cnn=$(realpath "$cnn")
[ -d "$mnist" ] || die "no MNIST at $mnist (pass --mnist DIR)"
mkdir -p "$out"/runs "$out"/logs "$out"/steps
out=$(realpath "$out")

if [ "$cpu" = 1 ]; then
    dev=cpu
    # The device side takes candle's operations, as on CUDA.
    devenv=(env CNN_KERNELS=candle CNN_READ_EVERY=32)
    epochs_mnist=1 epochs_cifar=1 limit=(--limit-train 2000 --limit-test 1000) cifar_limit=1000
else
    dev=cuda
    devenv=(env)
    epochs_mnist=2 epochs_cifar=2 limit=()
fi
if [ "$quick" = 1 ]; then
    limit=(--limit-train 256 --limit-test 256) cifar_limit=128
fi
# How far the test accuracies of the two sides may differ: a few standard
# errors of the test set's size (training on two devices takes sums in other
# orders, so the runs part ways a little).
acc_noise=0.015
[ "$cpu" = 1 ] || [ "$quick" = 1 ] && acc_noise=0.08
log() { printf '[gpu-check %s] %s\n' "$(date +%T)" "$*" >&2; }
started=$SECONDS

# Each step leaves one JSON object in steps/, merged at the end.
record() { # NAME JSON
    printf '%s\n' "$2" > "$out/steps/$1.json"
}
json_field() { # FILE EXPR (python, d = the object)
    "$python" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {"d": d}))' "$1" "$2"
}

# 1. The machine and the op-by-op check.
log "machine"
gpu_info=null
if [ "$cpu" = 0 ] && command -v nvidia-smi >/dev/null; then
    gpu_info=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1 |
        "$python" -c 'import json,sys; n,d,m=[s.strip() for s in sys.stdin.read().split(",")]; print(json.dumps({"gpu": n, "driver": d, "memory": m}))')
fi
record machine "{\"mode\": \"$([ $cpu = 1 ] && echo cpu-stand-in || echo gpu)\", \"device\": \"$dev\", \"gpu\": $gpu_info, \"cnn\": \"$("$cnn" --version | head -1)\", \"date\": \"$(date -u +%F)\"}"

log "op-by-op check on $dev"
configs=(configs/*.json)
set +e
"${devenv[@]}" "$cnn" check-device --device "$dev" --json $(printf -- '--config %s ' "${configs[@]}") \
    > "$out/ops.json" 2> "$out/logs/check-device.log"
ops_code=$?
set -e
record ops "{\"exit_code\": $ops_code}"

# 2. Training on the device and on the CPU, and each checkpoint on the other.
# A side is "device" (DEVICE, or candle's operations on the CPU with --cpu) or
# "kernels" (the CPU with cnn's own kernels).
run_on() { # SIDE CMD... (the command with the side's device environment)
    local side=$1
    shift
    if [ "$side" = device ]; then "${devenv[@]}" "$@"; else "$@"; fi
}
device_of() { [ "$1" = device ] && echo "$dev" || echo cpu; }
train() { # NAME CONFIG SIDE DATA EPOCHS EXTRA... → "EXIT_CODE SECONDS"
    local name=$1 config=$2 side=$3 data=$4 epochs=$5
    shift 5
    local t0=$SECONDS code=0
    run_on "$side" "$cnn" train --config "$config" --device "$(device_of "$side")" --data-dir "$data" \
        --epochs "$epochs" --out "$out/runs/$name" --quiet "$@" > "$out/logs/$name.log" 2>&1 || code=$?
    echo "$code $((SECONDS - t0))"
}
evaluate() { # CHECKPOINT SIDE → cnn eval --json, or {} when it fails
    run_on "$2" "$cnn" eval --checkpoint "$1" --device "$(device_of "$2")" --json 2>> "$out/logs/eval.log" || echo '{}'
}

# LABEL:CONFIG:DATA:EPOCHS:BATCH (an empty BATCH: the config's).
models=("lenet:lenet:mnist:$epochs_mnist:" "lenet-b512:lenet:mnist:$epochs_mnist:512"
    "three-conv:three-conv:mnist:$epochs_mnist:")
if [ -f "$cifar/test_batch.bin" ] || [ -f "$cifar/cifar-10-batches-bin/test_batch.bin" ]; then
    models+=("cifar10-cnn:cifar10-cnn:cifar:$epochs_cifar:")
else
    cifar=""
    log "no CIFAR-10 at the --cifar folder: cifar10-cnn skipped (scripts/get-cifar10.sh makes one)"
fi
for spec in "${models[@]}"; do
    IFS=: read -r model config data epochs batch <<< "$spec"
    data_dir=$mnist extra=("${limit[@]}")
    if [ "$data" = cifar ]; then
        data_dir=$cifar extra=(--limit-train "$cifar_limit" --limit-test "$cifar_limit" --set "data.val_size=$cifar_val")
    fi
    [ -n "$batch" ] && extra+=(--batch-size "$batch")
    for side in device kernels; do
        name=$([ "$side" = device ] && echo "$dev" || echo cpu)
        [ "$cpu" = 1 ] && [ "$side" = device ] && name=candle-ops
        log "$model on $name ($epochs epoch(s))"
        read -r code secs < <(train "$model-$name" "configs/$config.json" "$side" "$data_dir" "$epochs" "${extra[@]}")
        ck=$out/runs/$model-$name/best.safetensors
        here=$(evaluate "$ck" "$side")
        other=kernels; [ "$side" = kernels ] && other=device
        there=$(evaluate "$ck" "$other")
        history=$out/runs/$model-$name/history.json
        [ -f "$history" ] || history=/dev/null
        record "train-$model-$name" "$("$python" - "$history" "$model" "$name" "$side" "$code" "$secs" "$here" "$there" <<'PY'
import json, sys
history, model, name, side, code, secs, here, there = sys.argv[1:]
try:
    h = json.load(open(history))
except Exception:
    h = []
last = h[-1] if h else {}
here, there = json.loads(here or "{}"), json.loads(there or "{}")
print(json.dumps({
    "model": model, "side": name, "device_side": side == "device", "exit_code": int(code),
    "wall_seconds": int(secs), "epochs": len(h), "test_acc": last.get("test_acc"),
    "train_images_per_second": last.get("images_per_second"),
    "eval_accuracy": here.get("accuracy"), "eval_images_per_second": here.get("images_per_second"),
    "test_images": here.get("samples"),
    "other_device_accuracy": there.get("accuracy"),
}))
PY
)"
    done
done

# 3. PyTorch on the same device.
torch_ok=0
if "$python" -c 'import torch' 2>/dev/null; then
    torch_dev=$dev
    if [ "$cpu" = 0 ] && ! "$python" -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        log "PyTorch sees no GPU: skipped"
    else
        torch_ok=1
    fi
else
    log "no PyTorch in $python: the side-by-side is skipped"
fi
if [ "$torch_ok" = 1 ]; then
    for spec in "${models[@]}"; do
        IFS=: read -r model config data epochs batch <<< "$spec"
        data_dir=$mnist extra=("${limit[@]}")
        [ "$data" = cifar ] && data_dir=$cifar extra=(--limit-train "$cifar_limit")
        # torch_reference.py takes --limit-train only (the test set is whole).
        args=()
        for ((i = 0; i < ${#extra[@]}; i += 2)); do
            [ "${extra[i]}" = --limit-train ] && args+=(--limit-train "${extra[i+1]}")
        done
        [ "$data" = cifar ] && args+=(--val-size "$cifar_val")
        [ -n "$batch" ] && args+=(--batch-size "$batch")
        log "$model in PyTorch on $torch_dev"
        if "$python" scripts/torch_reference.py train --config "configs/$config.json" --data-dir "$data_dir" \
            --device "$torch_dev" --epochs "$epochs" --json "${args[@]}" \
            > "$out/steps/torch-$model.raw" 2> "$out/logs/torch-$model.log"; then
            # The last epoch's speed, as cnn's history gives it (the first
            # carries the warm-up: kernels loaded, cuBLAS started).
            record "torch-$model" "$("$python" -c 'import json,sys; d=json.load(open(sys.argv[1])); d["model"]=sys.argv[2]; d["images_per_second"]=d["train_images"]/d["epoch_seconds_each"][-1]; print(json.dumps(d))' "$out/steps/torch-$model.raw" "$model")"
        else
            record "torch-$model" "{\"model\": \"$model\", \"error\": \"see logs/torch-$model.log\"}"
        fi
        rm -f "$out/steps/torch-$model.raw"
    done
fi

# 4. Failure modes.
failure() { # NAME EXPECTED_CODES ARGS...
    local name=$1 expected=$2
    shift 2
    local code=0
    "$cnn" "$@" > "$out/logs/$name.log" 2>&1 || code=$?
    local panic=false
    grep -q panicked "$out/logs/$name.log" && panic=true
    local msg
    msg=$(grep -m1 '^error:' "$out/logs/$name.log" | "$python" -c 'import json,sys; print(json.dumps(sys.stdin.read().strip()))')
    local ok=false
    [[ " $expected " == *" $code "* ]] && [ "$panic" = false ] && ok=true
    record "fail-$name" "{\"case\": \"$name\", \"exit_code\": $code, \"expected\": \"$expected\", \"panic\": $panic, \"message\": $msg, \"ok\": $ok}"
}
log "failure modes"
failure missing-gpu "2" train --config configs/lenet.json --device cuda:7 --data-dir "$mnist" --out "$out/runs/missing-gpu"
if [ -n "$cifar" ]; then
    failure huge-batch "1 2" train --config configs/cifar10-cnn.json --device "$dev" --data-dir "$cifar" \
        --batch-size 2000000 --epochs 1 --out "$out/runs/huge-batch"
else
    failure huge-batch "1 2" train --config configs/three-conv.json --device "$dev" --data-dir "$mnist" \
        --batch-size 2000000 --epochs 1 --out "$out/runs/huge-batch"
fi
if [ -f "$out/runs/huge-batch/last.safetensors" ] || [ -f "$out/runs/huge-batch/best.safetensors" ]; then
    record fail-huge-batch-files '{"case": "huge-batch left a checkpoint", "ok": false}'
fi

# The table and the JSON.
"$python" - "$out" "$((SECONDS - started))" "$acc_noise" <<'PY'
import glob, json, os, sys
out, seconds, noise = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
steps = {os.path.basename(p)[:-5]: json.load(open(p)) for p in sorted(glob.glob(f"{out}/steps/*.json"))}
ops = {}
try:
    ops = json.load(open(f"{out}/ops.json"))
except Exception:
    pass
machine = steps.get("machine", {})
trains = [v for k, v in steps.items() if k.startswith("train-")]
torch = {v["model"]: v for k, v in steps.items() if k.startswith("torch-")}
fails = [v for k, v in steps.items() if k.startswith("fail-")]
problems = []
if steps.get("ops", {}).get("exit_code") != 0:
    problems.append(f"op-by-op check: {ops.get('failed', '?')} of {ops.get('checked', '?')} tensors beyond {ops.get('tolerance')}")
for t in trains:
    if t["exit_code"] != 0:
        problems.append(f"{t['model']} on {t['side']}: exit {t['exit_code']}")
    elif t["eval_accuracy"] is None or t["other_device_accuracy"] is None \
            or abs(t["eval_accuracy"] - t["other_device_accuracy"]) > 0.002:
        problems.append(f"{t['model']} on {t['side']}: {t['eval_accuracy']} here, {t['other_device_accuracy']} on the other device")
models = sorted({t["model"] for t in trains})
sides = {(t["model"], t["device_side"]): t for t in trains}
for m in models:
    a, b = sides.get((m, True)), sides.get((m, False))
    if a and b and a["test_acc"] is not None and b["test_acc"] is not None:
        # Beyond the fixed floor, three standard errors of the difference of
        # two accuracies measured on n test images (a small test set, such
        # as the CIFAR-10 subset, is noisy on its own).
        n, p = a.get("test_images") or 0, (a["test_acc"] + b["test_acc"]) / 2
        tol = max(noise, 3 * (2 * p * (1 - p) / n) ** 0.5) if n else noise
        if abs(a["test_acc"] - b["test_acc"]) > tol:
            problems.append(f"{m}: test accuracy {a['test_acc']:.4f} on {a['side']}, {b['test_acc']:.4f} on the CPU "
                            f"(more than {tol:.3f} apart)")
for f in fails:
    if not f.get("ok"):
        problems.append(f"failure mode {f['case']}: exit {f.get('exit_code')}, expected {f.get('expected')}")
pct = lambda v: "—" if v is None else f"{100 * v:.2f}%"
num = lambda v: "—" if v is None else f"{v:,.0f}"
lines = [f"# gpu-check ({machine.get('mode')}, {machine.get('date')})", ""]
g = machine.get("gpu") or {}
lines += [f"Device: {g.get('gpu', machine.get('device'))}, driver {g.get('driver', '—')}, {g.get('memory', '')}; {machine.get('cnn')}; {seconds} s in all.", ""]
lines += [f"Op-by-op: {ops.get('checked', '?')} layer outputs and gradients of one training step of every shipped config, "
          f"{ops.get('failed', '?')} beyond a relative {ops.get('tolerance', '?')} (gradients {ops.get('gradient_tolerance', '?')}; largest: "
          f"{max((r['relative_error'] for r in ops.get('results', [])), default=float('nan')):.1e}).", ""]
lines += ["| model | side | epochs | test acc | train img/s | eval img/s | acc on the other device | PyTorch train img/s | PyTorch eval img/s | PyTorch test acc | train × PyTorch |",
          "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
for m in models:
    for device_side in (True, False):
        t = sides.get((m, device_side))
        if not t:
            continue
        p = torch.get(m, {}) if device_side else {}
        ours, theirs = t["train_images_per_second"], p.get("images_per_second")
        ratio = f"{ours / theirs:.2f}×" if ours and theirs else "—"
        lines.append(f"| {m} | {t['side']} | {t['epochs']} | {pct(t['test_acc'])} | {num(ours)} | "
                     f"{num(t['eval_images_per_second'])} | {pct(t['other_device_accuracy'])} | "
                     f"{num(theirs)} | {num(p.get('eval_images_per_second'))} | {pct(p.get('test_acc'))} | {ratio} |")
lines += ["", "| failure mode | exit | expected | message |", "| --- | ---: | --- | --- |"]
for f in fails:
    lines.append(f"| {f['case']} | {f.get('exit_code', '—')} | {f.get('expected', '—')} | {(f.get('message') or '').replace('|', '/')[:160]} |")
lines += ["", "All checks passed." if not problems else "Problems:\n" + "\n".join(f"- {p}" for p in problems)]
open(f"{out}/gpu-check.md", "w").write("\n".join(lines) + "\n")
json.dump({"machine": machine, "seconds": seconds, "ops": {k: ops.get(k) for k in ("checked", "failed", "tolerance")},
           "training": trains, "pytorch": list(torch.values()), "failure_modes": fails, "problems": problems},
          open(f"{out}/gpu-check.json", "w"), indent=2)
print("\n".join(lines))
sys.exit(1 if problems else 0)
PY
