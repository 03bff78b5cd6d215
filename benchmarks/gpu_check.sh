#!/usr/bin/env bash
# The prepared GPU check, rerunnable by anyone with a CUDA box; random-weight Qwen3-4B / Qwen3-0.6B shapes, nothing
# downloaded. At most about 8.5 minutes: each step has a time limit (270 s and 240 s, set from estimates of the
# compile times, not yet timed with hf_compiled in). fast_engine.py rewrites its files after every row, so a cut
# step 1 keeps what it finished; step 2's limit sends SIGTERM, which stops app.py like the dashboard's Stop (every
# row keeps its whole repetitions), with 30 s of grace before a SIGKILL.
#   1. fast_engine: benchmarks/fast_engine.py --profile: fast / hf_compiled / eager hf at batch 1 on both models,
#      bandwidth, and a torch.profiler trace of 20 decode steps per model of fast and hf_compiled with its
#      time-by-kind table (fast_engine.md; traces in profile/). Extra arguments go to it, e.g.
#      --variant "no fusion:BENCH_FAST_FUSE=0" --variant "inductor defaults:BENCH_FAST_TUNING=0" (per-change rows;
#      each recompiles both models, about 2 minutes more) or --runs 5.
#   2. engines: the `engines` preset through the runner, hf / hf_compiled / fast side by side, standard and batched
#      at batch sizes 1, 8 and 32, 32 new tokens, 2 repetitions (engines.csv, engines.txt).
# Compiling is most of the time (each compiled engine compiles per model and batch size); a step cut by its limit
# says so, and GPU_CHECK_STEPS=engines (or fast_engine) reruns one step alone with the other's files left as they are.
# Usage: [OUT=folder] [GPU_CHECK_STEPS="fast_engine engines"] bash benchmarks/gpu_check.sh [fast_engine.py arguments]
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-results/gpu_check}"
STEPS="${GPU_CHECK_STEPS:-fast_engine engines}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python}"  # the interpreter with CUDA torch (a CPU-only .venv would measure nothing)

cut_short() {  # cut_short EXIT_CODE SECONDS STEP: say so when a step's time limit stopped it
  if [ "$1" -eq 124 ]; then
    echo "!! $3 stopped at its $2 s limit: its files hold what finished (GPU_CHECK_STEPS=$3 reruns it alone)"
  fi
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
} 2>&1 | tee "$OUT/env.txt"

case " $STEPS " in *" fast_engine "*)
  echo "== fast_engine: fast / hf_compiled / hf at batch 1, with --profile"
  # fast_engine.py rewrites its files after every row; TORCH_LOGS=perf_hints says why a graph skips CUDA graphs.
  timeout 270 env TORCH_LOGS=perf_hints $PY benchmarks/fast_engine.py --out-dir "$OUT" --profile --runs 3 \
    --hf-new-tokens 32 --skip-speculative "$@" > "$OUT/fast_engine.log" 2>&1
  code=$?
  grep -v "^\s*$" "$OUT/fast_engine.log" | grep -v "perf_hints\|^\s*File \|Loading weights" | tail -80
  cut_short $code 270 fast_engine
  ;;
esac

case " $STEPS " in *" engines "*)
  echo "== engines: the engines preset, random weights, hf / hf_compiled / fast"
  # Every row is warmed up before any is measured: a run cut during warm-up leaves no rows, only the progress in
  # engines.stderr; cut later, the rows keep the repetitions they finished.
  timeout -k 30 240 $PY app.py --preset engines --random-weights --methods standard,batched --max-new-tokens 32 \
    --repetitions 2 --results "$OUT/engines.csv" 2>"$OUT/engines.stderr" | tee "$OUT/engines.txt"
  code=${PIPESTATUS[0]}
  tail -3 "$OUT/engines.stderr"
  cut_short $code 240 engines
  ;;
esac

echo "== files in $OUT"
echo "  env.txt                 GPU, driver, torch, transformers"
echo "  fast_engine.md / .csv   batch-1 rows of the three engines, bandwidth, profile tables (fast_engine.log: all output)"
echo "  profile/*.json          Chrome traces of 20 decode steps (https://ui.perfetto.dev); profile.csv: the tables"
echo "  engines.csv / .txt      the engines preset's rows (outputs.jsonl beside them holds the texts)"
ls -la "$OUT" "$OUT/profile" 2>/dev/null | sed 's/^/  /'
