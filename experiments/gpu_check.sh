#!/usr/bin/env bash
# ResNet-101 ex-CAM on one GPU, in under 5 minutes: bf16 throughput at 448 px, memory with and
# without remat, and float32 at 224 px. Expected figures: experiments/gpu_check.md.
#
#   pip install -r requirements.txt && pip install -e . && pip install 'jax[cuda13]==0.10.2'
#   bash experiments/gpu_check.sh [OUT_DIR]        # one JSON line per check in OUT_DIR/gpu.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/gpu_check}"
mkdir -p "$out"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # Peak memory as used, not as reserved.
python -c 'import jax, sys; d = jax.devices()[0]; print(d.device_kind, jax.default_backend());
sys.exit(0 if jax.default_backend() == "gpu" else "no GPU: jax sees " + jax.default_backend())'
run() {  # One configuration in its own process, so that each peak is its own.
  echo "== $*"
  timeout 120 python experiments/bench_resnet101.py --json --steps=10 "$@" | tee -a "$out/gpu.jsonl"
}
: > "$out/gpu.jsonl"
run --size=448 --batch=64 --dtype=bfloat16
run --size=448 --batch=64 --dtype=bfloat16 --remat
run --size=448 --batch=64 --dtype=float32
run --size=224 --batch=64 --dtype=float32
python - "$out/gpu.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print('| px | dtype | remat | train img/s | eval img/s | peak GiB |')
print('| --- | --- | --- | --- | --- | --- |')
for r in rows:
  print(f"| {r['size']} | {r['dtype']} | {r['remat']} | {r['train_images_per_s']:.0f} | "
        f"{r['eval_images_per_s']:.0f} | {r['peak_device_gib'] or 0:.1f} |")
PY
