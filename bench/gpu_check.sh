#!/usr/bin/env bash
# The GPU path end to end, with the figures it measures. On a machine whose torch sees a
# CUDA device, runs on it (each step printed before it runs; the first failure stops it):
#   1. classify --preset smoke: one run per lr, the stacked sweep, and --amp bf16
#   2. caption --preset smoke: region features extracted on the GPU, then training
#   3. serve: the app built on the GPU from the smoke caption models, one caption request
#   4. the speed benchmarks with --device cuda, ours and the reference both on the GPU
#      (classify_speed, classify_sweep_speed, caption_speed with the one-seed protocol),
#      whose ratios are the figures to report
# Without CUDA it stops at once with exit status 1 and says why.
# Usage: bench/gpu_check.sh [OUT]   (OUT: folder for the runs, default a new temporary one)
# Environment: PYTHON (default .venv/bin/python), SYDNEY (Sydney-Captions folder, default
# $CONVATTN_SYDNEY, then ../shared/datasets/sydney-captions), STEPS (the classify
# benchmarks' steps, default 3000).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
SYDNEY=${SYDNEY:-${CONVATTN_SYDNEY:-../shared/datasets/sydney-captions}}
STEPS=${STEPS:-3000}
OUT=${1:-$(mktemp -d -t convattn-gpu-check.XXXXXX)}

if ! "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: torch $("$PYTHON" -c 'import torch; print(torch.__version__)') sees no" \
         "CUDA device here: nothing was run (a GPU and a CUDA build of torch are needed)" >&2
    exit 1
fi
if [ ! -f "$SYDNEY/dataset.json" ]; then
    echo "gpu_check: SYDNEY=$SYDNEY has no dataset.json; point SYDNEY to Sydney-Captions" >&2
    exit 2
fi

step() {
    echo
    echo "== $*"
    local t0=$SECONDS
    "$@"
    echo "== done in $((SECONDS - t0)) s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda},",
                                  torch.cuda.get_device_name())'
echo "runs in $OUT"

CLASSIFY=("$PYTHON" -m convattn classify --preset smoke --device cuda --quiet)
step "${CLASSIFY[@]}" --sweep processes --out "$OUT/classify-smoke"
step "${CLASSIFY[@]}" --sweep stacked --out "$OUT/classify-smoke-stacked"
step "${CLASSIFY[@]}" --amp bf16 --out "$OUT/classify-smoke-bf16"
step "$PYTHON" - "$OUT" <<'EOF'
# the stacked sweep against the separate runs on the GPU: same selection, close accuracies
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
a, b = (json.loads((out / d / "summary.json").read_text())
        for d in ("classify-smoke", "classify-smoke-stacked"))
for ra, rb in zip(a["runs"], b["runs"]):
    print(f"lr {ra['lr']:g}: processes dev {ra['val_acc'][-1]} test {ra['test_acc']}; "
          f"stacked dev {rb['val_acc'][-1]} test {rb['test_acc']}")
assert a["best_lr"] == b["best_lr"], (a["best_lr"], b["best_lr"])
EOF

CACHE=${CONVATTN_CACHE:-$OUT/cache}   # a fresh cache: the features are extracted on the GPU
step env CONVATTN_CACHE="$CACHE" "$PYTHON" -m convattn caption --preset smoke --device cuda \
    --data "$SYDNEY" --out "$OUT/caption-smoke"

step "$PYTHON" - "$OUT" "$SYDNEY" <<'EOF'
# serve on the GPU: the app as `convattn serve --model ... --device cuda` builds it
import json, sys
from pathlib import Path
from fastapi.testclient import TestClient
from convattn.serve.cli import build
out, sydney = Path(sys.argv[1]), Path(sys.argv[2])
models = sorted(str(p) for p in (out / "caption-smoke").rglob("model.pt"))
assert models, "the caption smoke run wrote no model.pt"
app, store = build(models, None, "cuda")
image = sorted((sydney / "images").iterdir())[0]
with TestClient(app) as client:
    listed = client.get("/api/models").json()
    for m in listed:
        r = client.post("/api/caption", files={"image": (image.name, image.read_bytes())},
                        data={"model": m["id"]})
        assert r.status_code == 200, (r.status_code, r.text[:300])
        print(m["label"], "on", store.device, "->", json.dumps(r.json())[:200])
EOF

step "$PYTHON" bench/classify_speed.py --device cuda --steps "$STEPS" --repeat 2
step "$PYTHON" bench/classify_sweep_speed.py --device cuda --steps "$STEPS" --repeat 2
step "$PYTHON" bench/caption_speed.py --device cuda --data "$SYDNEY" --protocol --jobs 1
echo
echo "gpu_check: every step passed; runs in $OUT"
