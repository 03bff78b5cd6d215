#!/usr/bin/env bash
# The prepared GPU check, rerunnable by anyone with a CUDA box: one command of at most 5 minutes (a 270 s limit, then
# SIGTERM, which stops benchmarks/fast_engine.py like the dashboard's Stop, with 30 s of grace before a SIGKILL).
# Random-weight Qwen3-0.6B and Qwen3-4B shapes, nothing downloaded.
#   benchmarks/fast_engine.py: hf / hf_compiled / fast through the runner, standard decoding at batch 1 on both models,
#   64 new tokens, 3 repetitions, each model's rows measured interleaved: tok/s with 95% intervals, % of copy bandwidth,
#   compile time; then --profile: a torch.profiler trace of 20 decode steps of the fast engine per model and its
#   time-by-kind table (fast_engine.md; rows in runs.csv; traces in profile/).
# Extra arguments go to it and override these, e.g. --methods standard,speculative (the 4B drafted by the 0.6B: the
# draft/target step ratio and Leviathan et al.'s prediction), --methods standard,batched --batch-sizes 1,8,32, or
# --variant "no fusion:fast_fuse=false" (per-change rows; each compiles both models again). Compiling is most of the
# time (each compiled engine compiles per model, batch size and method); the limit is set from estimates of the
# compile times, not yet timed. Stopped at the limit, every finished row keeps its whole repetitions, and the rows of
# a model still warming up are lost (its rows are measured together after their warm-up).
# Usage: [OUT=folder] [PYTHON=python] bash benchmarks/gpu_check.sh [fast_engine.py arguments]
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-results/gpu_check}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python}"  # the interpreter with CUDA torch (a CPU-only .venv would measure nothing)

echo "== fast_engine: hf / hf_compiled / fast at batch 1 through the runner, with --profile (at most 300 s)"
# TORCH_LOGS=perf_hints says why a graph skips CUDA graphs; every row records the GPU, driver, torch and transformers.
timeout -k 30 270 env TORCH_LOGS=perf_hints "$PY" benchmarks/fast_engine.py --out-dir "$OUT" --device cuda \
  --methods standard --new-tokens 64 --runs 3 --profile --profile-engines fast "$@" > "$OUT/fast_engine.log" 2>&1
code=$?
grep -v "^\s*$" "$OUT/fast_engine.log" | grep -v "perf_hints\|^\s*File \|Loading weights\|repetition [0-9]" | tail -80
if [ "$code" -eq 124 ] || [ "$code" -eq 137 ]; then
  echo "!! stopped at its 270 s limit: fast_engine.md and runs.csv hold the rows that finished"
fi

echo "== files in $OUT"
echo "  fast_engine.md          the table of the rows, the profile tables (fast_engine.log: all output)"
echo "  runs.csv                the runner's rows (outputs.jsonl beside it holds the texts; python app.py --results)"
echo "  profile/*.json          Chrome traces of 20 decode steps (https://ui.perfetto.dev); profile.csv: the tables"
ls -la "$OUT" "$OUT/profile" 2>/dev/null | sed 's/^/  /'
exit "$code"
