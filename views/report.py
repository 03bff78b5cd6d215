"""One self-contained HTML file of one or more runs, to send to a colleague: it opens offline, anywhere.

    python app.py --preset quick --report results/table.html     # after a headless run
    write_report("table.html", rows, records)            # rows: archive.load_rows(...) of some runs

It holds the runs' settings and environment, the summary table with 95% intervals (the CLI's cells), every
chart of the Results page (views.charts.FIGURES) as interactive Plotly with plotly.js embedded once (about
5 MB, no network needed), and the generated texts. Everything from rows and users is escaped.
"""
from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from pathlib import Path

import pandas as pd

from store import notebook
from views import charts, compare, table
from views.verdict import verdict

CSS = """
:root {--border: #cbd5e1; --muted: #64748b; --soft: #f8fafc}
body {font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1400px;
  padding: 0 20px; color: #0f172a}
h1 {margin-bottom: 2px} h2 {margin-top: 34px; border-bottom: 1px solid var(--border); padding-bottom: 4px}
.sub, .bench-muted {color: var(--muted)} nav a {margin-right: 14px}
table {border-collapse: collapse; font-size: 13px; margin: 8px 0}
th, td {border: 1px solid var(--border); padding: 3px 8px; text-align: left; vertical-align: top}
th {background: var(--soft)} td.num {text-align: right; font-variant-numeric: tabular-nums}
#summary + div td {white-space: nowrap}
tr.differs td {background: #fef9c3}
.table-wrap {overflow-x: auto}
.charts {display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 14px}
@media (max-width: 1100px) {.charts {grid-template-columns: minmax(0, 1fr)}}
h3.section {margin: 22px 0 8px; font-size: 14px; color: var(--muted); text-transform: uppercase; letter-spacing: 0.04em}
.chart {border: 1px solid var(--border); border-radius: 8px; padding: 4px; min-width: 0}
.notes {font-size: 13px; color: #334155}
.errors {border: 1px solid #fca5a5; background: #fef2f2; color: #7f1d1d; border-radius: 8px; padding: 4px 14px}
.bench-note {border-left: 4px solid #f59e0b; background: #fffbeb; color: #78350f; padding: 6px 12px;
  border-radius: 4px; font-size: 13px}
.bench-prompt {margin-bottom: 18px} .bench-prompt-text {font-weight: 600; margin-bottom: 8px; white-space: pre-wrap}
.bench-seq, .bench-prompt-text code {font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px}
.bench-diverge {background: #fde68a; color: inherit; border-radius: 2px; outline: 1px solid #f59e0b}
.bench-same {color: #15803d; font-weight: 600} .bench-differs {color: #b45309; font-weight: 600}
.bench-cards {display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 10px}
.bench-card {border: 1px solid var(--border); border-radius: 8px; padding: 8px 10px; background: var(--soft);
  font-size: 13px; white-space: pre-wrap; word-break: break-word}
.bench-card-head {font-weight: 600; display: flex; justify-content: space-between; gap: 8px; margin-bottom: 4px;
  white-space: normal}
.bench-card-head span {font-weight: 400; color: var(--muted)}
.bench-seq + .bench-seq {border-top: 1px dashed var(--border); margin-top: 6px; padding-top: 6px}
.bench-verdict {border: 1px solid #93c5fd; background: #eff6ff; border-radius: 8px; padding: 8px 16px; font-size: 14px}
.bench-verdict-head {font-weight: 700; margin-bottom: 2px} h2 + .bench-verdict .bench-verdict-head {display: none}
.bench-verdict ul {margin: 4px 0; padding-left: 20px} .bench-verdict li {margin: 3px 0; line-height: 1.45}
.bench-verdict-warning {color: #78350f} .bench-verdict-warning::marker {content: "⚠ "}
"""


def cell(value) -> str:
    return escape(notebook.text(value))


def table_html(header: list[str], lines: list[list[str]], classes: list[str] | None = None,
               numeric: set[int] | None = None) -> str:
    """A plain table; cells are already text (escaped here)."""
    numeric = numeric or set()
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        f'<tr class="{classes[i] if classes else ""}">'
        + "".join(f'<td class="num">{escape(c)}</td>' if j in numeric else f"<td>{escape(c)}</td>"
                  for j, c in enumerate(line)) + "</tr>"
        for i, line in enumerate(lines))
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def runs_section(df: pd.DataFrame) -> str:
    overview = notebook.run_overview(df)
    lines = [[r["label"], r["run_id"], r["tags"], r["notes"], r["started"], r["model"], r["device_name"],
              f"{r['ok']} of {r['rows']}"] for r in overview.to_dict("records")]
    return table_html(["run", "run id", "tags", "notes", "started (UTC)", "model", "device", "rows ok"], lines)


def settings_section(df: pd.DataFrame) -> str:
    run_ids = list(dict.fromkeys(df["run_id"].astype(str)))
    diff = compare.settings_diff(df, run_ids, all_keys=True)
    differs = [len(set(line[1:])) > 1 for line in diff.itertuples(index=False)]
    lines = [[str(v) for v in line] for line in diff.itertuples(index=False)]
    note = ("<p class='sub'>Keys that differ between the runs are highlighted.</p>" if len(run_ids) > 1 else "")
    return note + table_html(list(diff.columns), lines, ["differs" if d else "" for d in differs])


def summary_section(df: pd.DataFrame) -> str:
    rows = df.to_dict("records")
    several = df["run_id"].nunique() > 1
    labels = notebook.run_labels(df)
    header = (["run"] if several else []) + [h for _, h, _ in table.COLUMNS]
    first_numeric = 1 if several else 0
    numeric = {i + first_numeric for i, (_, _, fmt) in enumerate(table.COLUMNS) if fmt.startswith("{:.")}
    lines = [([labels.get(str(r["run_id"]), str(r["run_id"]))] if several else [])
             + [table.cell_text(r, k, f) for k, _, f in table.COLUMNS] for r in rows]
    notes = [
        "tok/s/seq = one sequence's new tokens / its call's latency (what a user waits for); agg tok/s = all new "
        "tokens of a call / its latency (throughput). Compare each only with itself.",
        "95% CI: bootstrap interval of the median tok/s/seq; ! = unstable (CI half-width above 10% of the median).",
        "speedup = tok/s/seq vs standard, paired per prompt and repetition (geometric mean), rounded to the digits "
        "its interval supports; n.s. = no significant difference (its CI contains 1).",
    ]
    row_notes = sorted({n for r in rows for n in str(r.get("notes") or "").split("; ")
                        if n and n not in ("nan", "<NA>")})
    failed = [r for r in rows if str(r.get("status")) != "ok"]
    errors = ""
    if failed:
        items = "".join(f"<li><b>{cell(r['method'])} [{cell(r['setting'])}]</b> {cell(r['status'])}: "
                        f"{cell(r.get('error'))}</li>" for r in failed)
        errors = f'<div class="errors"><p><b>{len(failed)} of {len(rows)} rows failed</b></p><ul>{items}</ul></div>'
    return (table_html(header, lines, numeric=numeric) + errors
            + "<div class='notes'>" + "".join(f"<p>{escape(n)}</p>" for n in notes)
            + "".join(f"<p>note: {escape(n)}</p>" for n in row_notes) + "</div>")


def charts_section(df: pd.DataFrame) -> str:
    """Every chart of the Results page, under the same section headings."""
    out = []
    for heading, names in charts.sections(list(charts.FIGURES)):
        parts = []
        for name in names:
            fig = charts.FIGURES[name](df)
            parts.append(f'<div class="chart" id="card-{escape(name)}">' + fig.to_html(
                full_html=False, include_plotlyjs=False, div_id=f"chart-{name}",
                # The figure's own height: a fixed one let taller figures spill into the next card.
                default_height=f"{fig.layout.height or charts.HEIGHT}px",
                config={"responsive": True, "displaylogo": False}) + "</div>")
        out.append((f'<h3 class="section">{escape(heading)}</h3>' if heading else "")
                   + f'<div class="charts">{"".join(parts)}</div>')
    return "".join(out)


def samples_section(df: pd.DataFrame, records: list[dict]) -> str:
    from views.samples import samples_html

    if not records:
        return "<p class='sub'>No generated texts were found for these runs.</p>"
    labels = notebook.run_labels(df)
    out = []
    for run_id in dict.fromkeys(df["run_id"].astype(str)):
        mine = [r for r in records if str(r.get("run_id")) == run_id]
        if not mine:
            continue
        rows = df[df["run_id"].astype(str) == run_id].to_dict("records")
        if df["run_id"].nunique() > 1:
            out.append(f"<h3>{escape(labels.get(run_id, run_id))}</h3>")
        for c in sorted({int(r.get("completion_index", 0)) for r in mine}):
            out.append(f"<h4>Completion {c + 1} of each prompt</h4>")
            out.append(samples_html(mine, run_id, None, c, rows))
    return "".join(out)


def report_html(rows: pd.DataFrame, records: list[dict] | None = None, title: str | None = None) -> str:
    """The whole report as one HTML string (plotly.js included)."""
    from plotly.offline import get_plotlyjs

    df = rows.reset_index(drop=True)
    if "hidden" not in df:
        df = notebook.apply_meta(df, {})
    labels = notebook.run_labels(df)
    title = title or "Decoding benchmark: " + ", ".join(labels.values())
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        ("verdict", "Verdict", verdict(df.to_dict("records")).html()),
        ("runs", "Runs", runs_section(df)),
        ("settings", "Settings and environment", settings_section(df)),
        ("summary", "Summary (medians with 95% intervals)", summary_section(df)),
        ("charts", "Charts", charts_section(df)),
        ("samples", "Samples", samples_section(df, records or [])),
    ]
    nav = "".join(f'<a href="#{key}">{escape(name)}</a>' for key, name, _ in sections)
    body = "".join(f'<h2 id="{key}">{escape(name)}</h2>{html}' for key, name, html in sections)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style>'
            f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
            f'<h1>{escape(title)}</h1><p class="sub">{len(df)} rows of {len(labels)} run(s) · made {made} by '
            f'decoding-bench · one file, no network needed</p><nav>{nav}</nav>{body}</body></html>\n')


def write_report(path: str | Path, rows: pd.DataFrame, records: list[dict] | None = None,
                 title: str | None = None) -> Path:
    """Write the report to path (its folder is made); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(report_html(rows, records, title), encoding="utf-8")
    tmp.replace(path)  # a reader (a browser refreshing) never sees half a report
    return path


def run_report(results_path: str | Path, run_ids: list[str], path: str | Path) -> Path:
    """The report of some runs of a results CSV: their rows, the sidecar's names, their texts."""
    from store import archive

    df = archive.load_rows(results_path)
    df = notebook.apply_meta(df, notebook.load_meta(results_path))
    wanted = {str(r) for r in run_ids}
    df = df[df["run_id"].astype(str).isin(wanted)]
    records = [r for r in archive.load_outputs(results_path) if str(r.get("run_id")) in wanted]
    return write_report(path, df, records)
