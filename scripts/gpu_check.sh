#!/usr/bin/env bash
# The check to run on the day a GPU is lent: every GPU path of clip_train once, meant to take under 8 minutes.
#
#   scripts/gpu_check.sh                          # all GPUs of this node (one or several)
#   scripts/gpu_check.sh --cpu                    # the same checks on 2 CPU processes, test sizes (what tests run)
#   GPU_CHECK_SKIP="fsdp" scripts/gpu_check.sh    # leave checks out (reported as skip), here fsdp's three
#
# Checks, in order, each a separate process; its output goes to $GPU_CHECK_DIR/<check>.log:
#   ddp        train the tiny preset under DDP (trainer=ddp: bf16-mixed on a GPU with bf16) on every device
#   fsdp       the same under the shipped FSDP preset (trainer=fsdp), only devices and accelerator set
#   compiled   the same as ddp with compile=true
#   benchmark  scripts/benchmark.py --synthetic-data for ViT-B/16 (one device): prints samples/s and MFU
#   evaluate   python -m clip_train.evaluate on the ddp and fsdp checkpoints (evaluate_ddp, evaluate_fsdp)
#   export     python -m clip_train.export of the same, and clip_train.load of the folder gives the
#              checkpoint's embeddings (export_ddp, export_fsdp)
# It ends with one line per check, `pass`, `FAIL` or `skip`, and exits 1 if any check failed. Never part of CI.
#
# Environment: GPU_CHECK_ACCELERATOR (gpu; --cpu sets cpu), GPU_CHECK_DEVICES (all GPUs; 2 on the CPU),
# GPU_CHECK_DIR (a new temporary folder), GPU_CHECK_SKIP (checks to leave out), GPU_CHECK_BENCHMARK_MODEL
# (vit_b16; test on the CPU), GPU_CHECK_BENCHMARK_BATCH (128 per GPU: lower it if ViT-B/16 runs out of memory),
# GPU_CHECK_TIMEOUT (seconds per check, 240).
set -u

if [[ "${1:-}" == "--cpu" ]]; then
    GPU_CHECK_ACCELERATOR=cpu
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--cpu]" >&2
    exit 2
fi
ACCELERATOR=${GPU_CHECK_ACCELERATOR:-gpu}
OUT=${GPU_CHECK_DIR:-$(mktemp -d -t gpu_check.XXXXXX)}
SKIP=" ${GPU_CHECK_SKIP:-} "
TIMEOUT=${GPU_CHECK_TIMEOUT:-240}
PYTHON=${PYTHON:-python}
SCRIPTS=$(cd "$(dirname "$0")" && pwd)
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} WANDB_MODE=${WANDB_MODE:-offline}
mkdir -p "$OUT"

if [[ "$ACCELERATOR" == cpu ]]; then
    # test sizes: the test preset, 6 steps of 16 (debug=fast), in the presets' CPU precision (32-true)
    DEVICES=${GPU_CHECK_DEVICES:-2}
    TRAIN_SIZE=(debug=fast)
    BENCHMARK=(--steps 6 "model=${GPU_CHECK_BENCHMARK_MODEL:-test}" data.batch_size=8 trainer=cpu)
else
    DEVICES=${GPU_CHECK_DEVICES:-$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")}
    if [[ "$DEVICES" -lt 1 ]]; then
        echo "no GPU visible to torch; scripts/gpu_check.sh --cpu runs the checks on the CPU" >&2
        exit 2
    fi
    TRAIN_SIZE=(model=tiny data.batch_size=64 trainer.max_steps=300)
    BENCHMARK=(--steps 50 "model=${GPU_CHECK_BENCHMARK_MODEL:-vit_b16}" "data.batch_size=${GPU_CHECK_BENCHMARK_BATCH:-128}" trainer=gpu)
fi
echo "gpu_check: $ACCELERATOR, $DEVICES device(s), logs in $OUT"

PY=(timeout --kill-after=10 "$TIMEOUT" "$PYTHON")  # every Python process of a check, at most $TIMEOUT s
RESULTS=()
FAILED=0

# check NAME SUMMARY COMMAND...: run COMMAND (output to $OUT/NAME.log) and record pass, with SUMMARY's output
# (a command) on the line, or FAIL; NAME, or either part of it around `_`, in GPU_CHECK_SKIP records skip instead
# (GPU_CHECK_SKIP=fsdp skips fsdp, evaluate_fsdp and export_fsdp)
check() {
    local name=$1 summary=$2 status
    shift 2
    if [[ "$SKIP" == *" $name "* || "$SKIP" == *" ${name%%_*} "* || "$SKIP" == *" ${name#*_} "* ]]; then
        RESULTS+=("skip $name")
        return
    fi
    echo "== $name: $*"
    "$@" >"$OUT/$name.log" 2>&1
    status=$?
    if [[ $status -eq 0 ]]; then
        RESULTS+=("pass $name $($summary)")
        RESULTS[-1]=${RESULTS[-1]% }
    else
        FAILED=1
        RESULTS+=("FAIL $name (exit $status; $OUT/$name.log)")
        tail -n 20 "$OUT/$name.log"
    fi
}

train() {  # train RUN OVERRIDES...: a fresh run in $OUT/RUN; fails without a last checkpoint
    local run=$1
    shift
    "${PY[@]}" -m clip_train "${TRAIN_SIZE[@]}" trainer.devices="$DEVICES" "$@" \
        hydra.run.dir="$OUT/$run" ckpt_path=null logger=csv &&
        test -f "$OUT/$run/checkpoints/last.ckpt"
}

final_loss() {  # final_loss RUN: its last train/loss
    "$PYTHON" -c 'import json, sys; print("train/loss %.3f" % json.load(open(sys.argv[1]))["train/loss"])' \
        "$OUT/$1/metrics.json"
}

benchmark_figures() {  # samples/s and MFU of the benchmark
    "$PYTHON" -c 'import json, sys; r = json.load(open(sys.argv[1]))
print("%.1f samples/s, MFU %s" % (r["samples_per_sec"], "%.1f%%" % (100 * r["mfu"]) if "mfu" in r else "unknown"))' \
        "$OUT/benchmark.json"
}

evaluation_figures() {  # evaluation_figures RUN: its image-to-text R@1 on the evaluation set
    "$PYTHON" -c 'import json, sys; print("R@1 %.3f" % json.load(open(sys.argv[1]))["retrieval/image_to_text_R@1"])' \
        "$OUT/evaluate_$1/metrics.json"
}

export_and_compare() {  # export_and_compare RUN: export its checkpoint; the folder must embed as the checkpoint
    local checkpoint=$OUT/$1/checkpoints/last.ckpt
    "${PY[@]}" -m clip_train.export checkpoint="$checkpoint" out="$OUT/exported_$1" &&
        "${PY[@]}" - "$checkpoint" "$OUT/exported_$1" <<'EOF'
import sys

import torch

import clip_train

checkpoint, exported = clip_train.load(sys.argv[1]), clip_train.load(sys.argv[2])
captions = ["a red circle", "two blue squares on a green background"]
torch.testing.assert_close(exported.encode_text(captions), checkpoint.encode_text(captions))
size = checkpoint.image_size
images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    torch.testing.assert_close(exported.encode_pixels(images), checkpoint.encode_pixels(images))
print("exported embeddings equal the checkpoint's")
EOF
}

check ddp "final_loss ddp" train ddp trainer=ddp trainer.accelerator="$ACCELERATOR"
check fsdp "final_loss fsdp" train fsdp trainer=fsdp trainer.accelerator="$ACCELERATOR"
check compiled "final_loss compiled" train compiled trainer=ddp trainer.accelerator="$ACCELERATOR" compile=true
check benchmark benchmark_figures \
    "${PY[@]}" "$SCRIPTS/benchmark.py" --synthetic-data --out "$OUT/benchmark.json" --workdir "$OUT" "${BENCHMARK[@]}"
for run in ddp fsdp; do
    check "evaluate_$run" "evaluation_figures $run" "${PY[@]}" -m clip_train.evaluate checkpoint="$OUT/$run/checkpoints/last.ckpt" \
        accelerator="$ACCELERATOR" hydra.run.dir="$OUT/evaluate_$run" eval.num_workers=0
    check "export_$run" true export_and_compare "$run"
done

echo
echo "gpu_check summary ($ACCELERATOR, $DEVICES device(s)):"
printf '%s\n' "${RESULTS[@]}"
exit $FAILED
