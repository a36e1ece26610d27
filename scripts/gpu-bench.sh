#!/usr/bin/env bash
# The benchmark on a GPU host, in one go (about 5 minutes on an H100/H200):
#   scripts/gpu-bench.sh                 # on the GPU host, from the repository root
#   DEVICE=cpu N=2048 MEASURE=5 scripts/gpu-bench.sh    # the same command, dry-run on a CPU
# It draws a toy set of N faces (51,200 by default: one epoch of the article's data size),
# then runs bench.py at batch 256 and 64 and leaves the JSON and the printed tables in OUT.
# bench.py needs torch, torchvision, numpy and pillow only; if the host lacks packages that
# `main.py` needs (fire, torchnet, visdom), put their wheels in .whl/ beforehand (see README,
# "Speed") and they are installed into /tmp/site first, without network.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
N=${N:-51200}
DATA=${DATA:-/tmp/gpu-bench-faces}
OUT=${OUT:-bench-out}
MEASURE=${MEASURE:-50}
REPEATS=${REPEATS:-3}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"

if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

"$PY" - <<PYEOF
import os, time, torch
from toyfaces import make_toyfaces
print(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}",
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
if not os.path.exists("$DATA/attributes.csv"):
    t = time.time()
    make_toyfaces("$DATA", $N, 0)
    print(f"drew $N toy faces in {time.time() - t:.1f} s")
PYEOF

GPU_FLAG=--gpu=true
[ "$DEVICE" = cpu ] && GPU_FLAG=--gpu=false
for bs in 256 64; do
    "$PY" bench.py --data-path="$DATA" --batch-size=$bs --measure="$MEASURE" \
        --repeats="$REPEATS" --num-workers=4 $GPU_FLAG --json="$OUT/bench-$DEVICE-$bs.json" \
        | tee "$OUT/bench-$DEVICE-$bs.txt"
done
