#!/usr/bin/env bash
# The paper preset on a CUDA machine, in one go (bench/gpu_check.py says what each part measures):
#   1. generate and ingest a set of 10 s H.264/AAC clips (bench/train_throughput.py's generator),
#   2. data loading vs model step clips/s for both presets (bench/train_throughput.py),
#   3. under torchrun --nproc_per_node 1 (nccl): a few hundred paper training steps (bf16 autocast,
#      channels_last_3d, windows decoded in DataLoader workers) with clips/s, GPU memory and the share of
#      time waiting for data; then Sinkhorn on 200,000 x 309 x 10 heads on the GPU.
#
#   bench/gpu_check.sh                 # on a CUDA machine (about 5 minutes on 16 cores)
#   bench/gpu_check.sh --cpu-dry-run   # the same path on the CPU with gloo at toy size (checks the script)
#
# Environment: PYTHON (default .venv/bin/python, else python3), WORK (default a temporary folder),
# CLIPS, STEPS (defaults 512 and 300; the dry run uses 24 and 8).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
WORK=${WORK:-$(mktemp -d)}
export SELAVI_NO_PROGRESS=1 NUMBA_THREADING_LAYER=workqueue PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "${1:-}" = "--cpu-dry-run" ]; then
  CLIPS=${CLIPS:-24}; STEPS=${STEPS:-8}
  EXTRA=(--cpu-dry-run --sk-rows 20000 --sk-heads 2 --sk-cpu-heads 1)
  THROUGHPUT=(--presets cpu-small,paper --paper-batch 2 --steps 1 --batches 2 --device cpu)
  SECONDS_ARG=(--seconds 4)
else
  CLIPS=${CLIPS:-512}; STEPS=${STEPS:-300}
  EXTRA=()
  THROUGHPUT=(--presets cpu-small,paper --steps 10 --batches 40 --device cuda)
  SECONDS_ARG=(--seconds 10)
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device (use --cpu-dry-run)'; print(torch.cuda.get_device_name(0), torch.__version__, 'cuda', torch.version.cuda)"
  nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv || true
fi
echo "work folder: $WORK; $(nproc) cores"

t0=$(date +%s)
"$PY" bench/gpu_check.py --root "$WORK" --make-set --clips "$CLIPS" "${SECONDS_ARG[@]}"
echo "set of $CLIPS clips ready in $(( $(date +%s) - t0 )) s"

echo "== data loading vs model step (clips/s) =="
"$PY" bench/train_throughput.py --root "$WORK" --clips "$CLIPS" "${SECONDS_ARG[@]}" "${THROUGHPUT[@]}"

echo "== paper training under torchrun, then Sinkhorn =="
"$PY" -m torch.distributed.run --standalone --nproc_per_node 1 bench/gpu_check.py \
  --root "$WORK" --steps "$STEPS" "${EXTRA[@]}"
