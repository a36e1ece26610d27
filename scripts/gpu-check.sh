#!/usr/bin/env bash
# Everything a GPU host should check, in one go (planned for under 8 minutes on one
# H100/H200), ending with a table to paste into the README and docs/SCALING.md:
#   scripts/gpu-check.sh                  # on the GPU host, from the repository root
#   DEVICE=cpu scripts/gpu-check.sh       # the same steps at toy sizes on the CPU (the CUDA
#                                         # tests then report skipped), under 5 minutes
# Steps: (1) tests/test_cuda.py; (2) bench.py, the article's pipeline against ours, at batch
# 64 and 256; (3) a 2-process torchrun (on the CPU: gloo; on one GPU NCCL refuses two
# processes on one device, so it runs only with 2 GPUs and says so otherwise).
# Writes its logs and JSON to OUT (gpu-check-out/). Uses .venv/bin/python when there is one.
# A host without the packages main.py needs (fire, torchnet, visdom) and without network: put
# their wheels in .whl/ beforehand (built with `pip wheel -w .whl` where there is network,
# as the Makefile installs them); they are installed into /tmp/site first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
if [ "$DEVICE" = cpu ]; then
    N=${N:-512}; MEASURE=${MEASURE:-3}; REPEATS=${REPEATS:-1}; GPU_FLAG=--gpu=false
    TRAIN_GPU=--nogpu; NPROC=2
else
    N=${N:-51200}; MEASURE=${MEASURE:-50}; REPEATS=${REPEATS:-3}; GPU_FLAG=--gpu=true
    TRAIN_GPU=--gpu
    NPROC=$("$PY" -c "import torch; print(torch.cuda.device_count())")
fi
DATA=${DATA:-/tmp/gpu-check-faces-$N}

if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

echo "== 1. the CUDA tests"
"$PY" -m pytest -q -rs tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.txt" || true

echo "== 2. bench.py: the article's pipeline against ours"
"$PY" -c "from toyfaces import make_toyfaces; make_toyfaces('$DATA', $N, 0)" \
    > /dev/null 2>&1 || true
for bs in 64 256; do
    "$PY" bench.py --data-path="$DATA" --batch-size=$bs --measure="$MEASURE" \
        --repeats="$REPEATS" --num-workers=4 $GPU_FLAG --json="$OUT/bench-$bs.json" \
        | tee "$OUT/bench-$bs.txt"
done

echo "== 3. torchrun, 2 processes"
if [ "$DEVICE" = cpu ] || [ "$NPROC" -ge 2 ]; then
    "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 main.py train \
        --data-path="$DATA" $TRAIN_GPU --vis=False --seed=0 --ngf=32 --ndf=32 \
        --batch-size=32 --max-epoch=1 --checkpoint-dir="$OUT/torchrun" \
        --save-path="$OUT/torchrun" > "$OUT/torchrun.txt" 2>&1 \
        && TORCHRUN="2 processes trained one epoch of $N faces: netg_0.pth written" \
        || TORCHRUN="failed: see $OUT/torchrun.txt"
else
    TORCHRUN="not run: this host has $NPROC GPU (NCCL needs one GPU per process)"
fi
echo "$TORCHRUN"

echo
echo "== the table (device, kind, pipeline speeds and fraction of peak)"
"$PY" - "$OUT" "$TORCHRUN" <<'PYEOF'
import json, sys
from pathlib import Path
out, torchrun = Path(sys.argv[1]), sys.argv[2]
tests = (out / "test_cuda.txt").read_text().strip().splitlines()
print(f"CUDA tests: {tests[-1] if tests else 'no output'}")
print("| batch | device | kind | article images/s | ours images/s | ratio | "
      "article of peak | ours of peak |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for bs in (64, 256):
    r = json.loads((out / f"bench-{bs}.json").read_text())
    peak = lambda x: f"{x['fraction_of_peak']:.1%}" if x.get("fraction_of_peak") else "n/a"
    print(f"| {bs} | {r['device_name']} | {r['cpu_kind']} | "
          f"{r['article']['images_per_s']:.0f} | {r['ours']['images_per_s']:.0f} | "
          f"{r['speedup']:.2f}x | {peak(r['article'])} | {peak(r['ours'])} |")
print(f"torchrun: {torchrun}")
PYEOF
