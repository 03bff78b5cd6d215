#!/usr/bin/env bash
# The GPU check: one command of at most 4 minutes on an H100/H200 that gives the figures that matter, in this order,
# each written into $OUT as soon as it exists (docs/gpu.md: the command, what a bare machine must be given, the
# timeout):
#   1. environment: imports and versions (carried wheels in .whl/ installed only when something is missing), the
#      inductor cache inside the repo (.cache/inductor, git-ignored: a rerun on a warm machine hits it), then
#      `python app.py --check`;
#   2. correctness on CUDA: the shipped tiny pair in float32 on the fast engine, standard, batched, speculative (the
#      no-sync round) and prompt lookup: greedy_match must be 1.0 and the compile counters of the measured calls 0;
#   3. one real shape: random-weight Qwen3-0.6B and Qwen3-4B, batch 1, fast engine: tok/s with its 95% CI, MBU, compile
#      time, the draft/target step-time ratio (from the two rows' TPOT), beside the recorded 665.4 and 208.7 tok/s;
#   4. only if time is left: hf_compiled and hf on the same shapes, and the fast engine's profile table.
# Each step runs under the time left of a BUDGET (215 s); a step cut at it keeps every row it finished (SIGTERM stops
# the runner like the dashboard's Stop, with 20 s before a SIGKILL, inside the budget). At most 8 files land in $OUT: gpu_check.log (everything), summary.txt (the
# table printed at the end), check.txt, correctness.txt, runs.csv (the rows of steps 1-3), fast_engine.md (step 3's
# table), files.tar.gz (the small rest: step 4's rows and tables, texts, profile traces under 16 MiB).
# --dry-run: the same steps on the CPU, the tiny pair in step 2 and the Qwen3 shapes cut to 2 layers in steps 3-4,
# few tokens: it checks the script, not the speed (nothing compiles on the CPU; there is no copy bandwidth).
# Usage: OUT=folder [PYTHON=python3] [BUDGET=215] bash benchmarks/gpu_check.sh [--dry-run]
set -u
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT="${OUT:-results/gpu_check}"
mkdir -p "$OUT"
WORK="$(mktemp -d)"  # stores and traces; what matters is copied into $OUT after every step
BUDGET="${BUDGET:-215}"
GRACE=20  # after a step's SIGTERM: time to keep its finished rows before SIGKILL, inside the budget
START=$SECONDS
PY="${PYTHON:-python3}"
LOG="$OUT/gpu_check.log"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export TORCHINDUCTOR_CACHE_DIR="$PWD/.cache/inductor"
if [ "$DRY" = 1 ]; then
  DEVICE=cpu; PRESET=tiny; SHAPES="$WORK/models/Qwen3-0.6B-2layers,$WORK/models/Qwen3-4B-2layers"
  TOKENS="--prompt-tokens 16 --new-tokens 8 --runs 2"
else
  DEVICE=cuda; PRESET=quick; SHAPES="Qwen/Qwen3-0.6B,Qwen/Qwen3-4B"
  TOKENS="--prompt-tokens 128 --new-tokens 256 --runs 3"  # the recorded figures' shape
fi
: > "$LOG"
say() { echo "$@" | tee -a "$LOG"; }
left() { echo $(( BUDGET - (SECONDS - START) )); }
keep() {  # what exists so far, into $OUT: every row, the benchmark's table, the small rest packed
  [ -f "$WORK/runs.csv" ] && cp "$WORK/runs.csv" "$OUT/runs.csv"
  [ -f "$WORK/fast_engine.md" ] && cp "$WORK/fast_engine.md" "$OUT/fast_engine.md"
  (cd "$WORK" && find . -type f -size -16M ! -name runs.csv ! -name fast_engine.md ! -name '*.lock' \
     ! -path './models/*' -print0 | tar --null -czf "$OUT/files.tar.gz" -T - 2>/dev/null)
}
run_step() {  # run_step LIMIT FILE command...: under the smaller of LIMIT and the time left; output to FILE and the log
  local limit=$1 file=$2; shift 2
  local room=$(( $(left) - GRACE ))
  local t=$(( room < limit ? room : limit ))
  if [ "$t" -lt 15 ]; then say "!! skipped: $(left) s left of $BUDGET"; return 124; fi
  local began=$SECONDS
  timeout -k "$GRACE" "$t" "$@" > "$file" 2>&1
  local code=$?
  cat "$file" >> "$LOG"
  say "   ($(( SECONDS - began )) s, exit $code$([ $code -eq 124 ] && echo ": cut at its $t s"))"
  keep
  return $code
}

say "== 1. environment ($([ $DRY = 1 ] && echo dry run, CPU || echo CUDA); $(date -u +%FT%TZ))"
"$PY" - > "$WORK/env.txt" 2>&1 <<'EOF'
import importlib
names = {"torch": "torch", "transformers": "transformers", "accelerate": "accelerate", "safetensors": "safetensors",
         "tokenizers": "tokenizers", "pandas": "pandas", "tqdm": "tqdm", "pynvml": "nvidia-ml-py",
         "packaging": "packaging", "scipy": "scipy"}
missing = []
for module, package in names.items():
    try:
        print(f"{module} {getattr(importlib.import_module(module), '__version__', '')}")
    except Exception as e:
        print(f"{module} MISSING ({type(e).__name__})")
        missing.append(package)
import transformers
from packaging.version import Version
if Version(transformers.__version__) < Version("5.24"):
    missing.append("transformers")  # older 5.x refuse hf_compiled drafting; a carried 5.24 wheel replaces it
print("missing:", " ".join(dict.fromkeys(missing)))
EOF
cat "$WORK/env.txt" | tee -a "$LOG"
MISSING="$(sed -n 's/^missing: //p' "$WORK/env.txt")"
if [ -n "$MISSING" ]; then
  if ls .whl/*.whl > /dev/null 2>&1; then
    say "   installing carried wheels for: $MISSING"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      >> "$LOG" 2>&1 && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  else
    say "!! missing $MISSING and no wheels in .whl/ (docs/gpu.md says which to carry)"
  fi
fi
run_step 90 "$OUT/check.txt" "$PY" app.py --check --preset "$PRESET" --random-weights --device "$DEVICE" \
  --results "$WORK/runs.csv"

say "== 2. correctness: tiny pair, float32, fast engine (greedy_match 1.0, no compile inside a measured call)"
run_step 70 "$OUT/correctness.txt" "$PY" app.py --preset tiny --engine fast --device "$DEVICE" --dtype float32 \
  --methods standard,batched,speculative,prompt_lookup --speculative-modes greedy --batch-sizes 2 \
  --completions 1 --max-new-tokens 16 --repetitions 1 --no-fast-tuning --name "gpu_check correctness" --results "$WORK/runs.csv"

say "== 3. one real shape: $SHAPES, batch 1, fast engine"
if [ "$DRY" = 1 ]; then  # the Qwen3 configs cut to 2 layers: the same code at a size the CPU runs in seconds
  "$PY" - "$WORK/models" <<'EOF'
import json, sys
from pathlib import Path
for name in ("Qwen3-0.6B", "Qwen3-4B"):
    config = json.loads(Path(f"models/configs/Qwen__{name}.json").read_text())
    config["num_hidden_layers"] = 2
    if "layer_types" in config:
        config["layer_types"] = config["layer_types"][:2]
    folder = Path(sys.argv[1]) / f"{name}-2layers"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json"):  # no Hub here: the tiny byte-level tokenizer's ids
        (folder / name).write_text(Path(f"models/tiny/target/{name}").read_text())
EOF
fi
# shellcheck disable=SC2086
run_step 150 "$WORK/shape.txt" "$PY" benchmarks/fast_engine.py --models "$SHAPES" --engines fast --methods standard \
  $TOKENS --device "$DEVICE" --random-weights --out-dir "$WORK"

say "== 4. if time is left ($(left) s): hf_compiled and hf on the same shapes, the fast engine's profile"
# shellcheck disable=SC2086
run_step 120 "$WORK/more.txt" "$PY" benchmarks/fast_engine.py --models "$SHAPES" --engines hf_compiled,hf \
  --methods standard $TOKENS --runs 2 --device "$DEVICE" --random-weights --profile --profile-engines fast \
  --profile-steps 10 --out-dir "$WORK/more"

say "== summary ($(( SECONDS - START )) s)"
"$PY" benchmarks/gpu_summary.py "$WORK/runs.csv" "$WORK/more/runs.csv" > "$OUT/summary.txt" 2>&1
cat "$OUT/summary.txt" | tee -a "$LOG"
keep
ls "$OUT" | tee -a "$LOG"
rm -rf "$WORK"
