#!/usr/bin/env bash
# Make the README's figures with ktg itself: a short run of docs/example_graph.json on the embedded digits
# (CPU; a few minutes), its graph drawn, and every node's attention on four test images.
set -euo pipefail
cd "$(dirname "$0")/.."
run=runs/docs-digits
[ -f "$run/metrics.json" ] || ktg train --graph docs/example_graph.json --dataset digits --epochs 4 --device cpu \
    --out "$run"
ktg graph show "$run" --out docs/graph.png --size 6.4 6 --dpi 100
ktg attention --run "$run" --split test --n 4 --seed 3 --out docs/attention.png --dpi 90
# The attention grid's smooth colours make a large PNG; a 256-colour palette keeps it under 200 KB.
python - <<'PY'
from PIL import Image

image = Image.open("docs/attention.png").convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
image.save("docs/attention.png", optimize=True)
PY
ls -l docs/graph.png docs/attention.png
