#!/usr/bin/env bash
# The article's open question, on the toy set: which D/G training ratio (g_every) works best,
# with and without one-sided label smoothing, for the same budget of images seen.
#   experiments/dg_ratio.sh [EPOCHS] [OUT]      (default: 6 epochs of data/toy, runs/dg_ratio)
# Each setting trains the demo's narrow nets (ngf=ndf=32, batch 64, lr 2e-4, seed 0) and is
# evaluated with SWD and attribute modes at --num=1024; a markdown table is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
EPOCHS=${1:-6}
OUT=${2:-runs/dg_ratio}
LAST=$((EPOCHS - 1))
mkdir -p "$OUT"
[ -f data/toy/attributes.csv ] || "$PY" main.py toyfaces --out-dir=data/toy --num=10000 --seed=0
for smooth in 0 0.1; do
    for g in 1 2 5; do
        run="$OUT/g${g}_s${smooth}"
        start=$(date +%s)
        "$PY" main.py train --data-path=data/toy --nogpu --vis=False --seed=0 --ngf=32 --ndf=32 \
            --batch-size=64 --g-every=$g --label-smooth=$smooth --max-epoch="$EPOCHS" \
            --save-every="$EPOCHS" --save-path="$run" --checkpoint-dir="$run" > "$run.log" 2>&1
        echo $(( $(date +%s) - start )) > "$run/seconds"
        "$PY" main.py evaluate --nogpu --netg-path="$run/netg_$LAST.pth" --data-path=data/toy \
            --num=1024 --out="$run/metrics.json" >> "$run.log" 2>&1
    done
done
"$PY" - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| g_every | label smoothing | train time | SWD x1e3 (floor) | modes covered (real) | KL | confident |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for run in sorted(out.glob("g*_s*")):
    if not run.is_dir():
        continue
    m = json.loads((run / "metrics.json").read_text())
    g, s = run.name[1:].split("_s")
    print(f"| {g} | {s} | {int((run / 'seconds').read_text())} s | {m['swd']['mean']:.1f} "
          f"({m['swd_floor']['mean']:.1f}) | {m['modes']['modes']} ({m['modes_real']['modes']}) "
          f"| {m['modes']['kl']:.2f} | {m['modes']['confident_share']:.0%} |")
PYEOF
