#!/usr/bin/env bash
# The prepared GPU check, rerunnable by anyone with a CUDA box (about 5 minutes on an H100):
#   1. the `quick` preset on random-weight Qwen3-4B / Qwen3-0.6B shapes, hf engine, through the runner;
#   2. benchmarks/fast_engine.py: fast engine vs eager generate, bandwidth, speculative predictions.
# Usage: OUT=some/folder bash benchmarks/gpu_check.sh   (default OUT: results/gpu_check)
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-results/gpu_check}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
} 2>&1 | tee "$OUT/env.txt"
echo "== quick preset, random weights, hf engine"
timeout 200 python app.py --preset quick --random-weights --repetitions 2 --results "$OUT/quick.csv" \
  2>"$OUT/quick.stderr" | tee "$OUT/quick.txt"
tail -3 "$OUT/quick.stderr"
echo "== fast engine benchmark"
TORCH_LOGS=perf_hints timeout 330 python benchmarks/fast_engine.py --out-dir "$OUT" "$@" 2>&1 | tee "$OUT/fast_engine.log" | grep -v "^\s*$" | tail -60
