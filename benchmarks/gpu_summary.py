"""The GPU check's summary table (benchmarks/gpu_check.sh): every row it measured, whether the correctness step passed,
and the real shapes beside the figures recorded on an H100 (ANCHORS: 665.4 and 208.7 tok/s, ratio 0.31).

    python benchmarks/gpu_summary.py RUNS.csv [MORE.csv ...]"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RECORDED = {"Qwen3-0.6B": 665.4, "Qwen3-4B": 208.7}  # fast engine, H100, batch 1, 128 + 256 tokens (2026-11-26)
RECORDED_RATIO = 0.31


def number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def cell(value, fmt="{:.1f}") -> str:
    v = number(value)
    return "-" if v != v else fmt.format(v)


def short(model) -> str:
    return str(model).rstrip("/").split("/")[-1]


def main(paths) -> int:
    import pandas as pd

    frames = [pd.read_csv(p, keep_default_na=False) for p in paths if Path(p).is_file() and Path(p).stat().st_size]
    if not frames:
        print("no rows were measured")
        return 1
    rows = pd.concat(frames, ignore_index=True).to_dict("records")
    head = ("run", "model", "engine", "method", "setting", "status", "tok/s", "95% CI", "MBU", "regime", "compile s",
            "measured compiles", "re-records", "breaks", "=greedy")
    grid = [head]
    for r in rows:
        grid.append((str(r.get("run_name") or "")[:22], short(r["model"]), r["engine"], r["method"], r["setting"],
                     r["status"], cell(r.get("tokens_per_s_per_sequence_median")),
                     f"{cell(r.get('tokens_per_s_per_sequence_ci_low'))}-"
                     f"{cell(r.get('tokens_per_s_per_sequence_ci_high'))}",
                     cell(r.get("mbu"), "{:.2f}"), str(r.get("regime") or "-"), cell(r.get("compile_s")),
                     cell(r.get("measured_compiles"), "{:.0f}"), cell(r.get("measured_cudagraph_records"), "{:.0f}"),
                     cell(r.get("graph_breaks"), "{:.0f}"), cell(r.get("greedy_match"), "{:.2f}")))
    widths = [max(len(str(line[i])) for line in grid) for i in range(len(head))]
    for i, line in enumerate(grid):
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print()
    correct = [r for r in rows if str(r.get("run_name")) == "gpu_check correctness"]
    bad = [r for r in correct if r["status"] != "ok" or (r["method"] != "standard" and number(r.get("greedy_match")) != 1.0)
           or number(r.get("measured_compiles")) > 0 or number(r.get("measured_cudagraph_records")) > 0]
    if correct:
        print(f"correctness: {'PASS' if not bad else 'FAIL'} ({len(correct)} rows; greedy_match 1.0 and no compile "
              f"or re-record inside a measured call{'' if not bad else ': ' + ', '.join(r['method'] for r in bad)})")
    fast = {short(r["model"]): r for r in rows if r["engine"] == "fast" and r["method"] == "standard"
            and r["status"] == "ok" and str(r.get("run_name", "")).startswith("fast_engine")}
    for model, recorded in RECORDED.items():
        for name, r in fast.items():
            if name.startswith(model):
                got = number(r.get("tokens_per_s_per_sequence_median"))
                print(f"{name}: fast engine {got:.1f} tok/s against {recorded} recorded on an H100"
                      + ("" if name == model else " (a cut shape: not comparable)"))
    small, large = (next((r for n, r in fast.items() if n.startswith(m)), None) for m in RECORDED)
    if small and large:
        ratio = number(small.get("tpot_ms_median")) / number(large.get("tpot_ms_median"))
        print(f"draft/target step-time ratio (TPOT 0.6B / TPOT 4B): {ratio:.3f} against {RECORDED_RATIO} recorded")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
