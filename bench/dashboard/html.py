"""HTML and Markdown the pages show: progress bar, errors, the run summary (texts side by side: views/samples.py).

Plain functions of rows and events, so they can be checked without a browser. Every value from a row or
a user is escaped: model ids, prompts and error texts are not markup.
"""
from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.runner import Progress


def error_md(message: str) -> str:
    # quote=False: the message keeps the CLI's exact words ('max_new_tokens', not &#x27;...)
    return f"**error:** {escape(message, quote=False)}" if message else ""


def form_error_md(message: str) -> str:
    """error_md in the form's words: labels beside keys (see form.form_words)."""
    from bench.dashboard.form import form_words

    return error_md(form_words(message)) if message else ""


def progress_html(fraction: float, title: str, detail: str = "", state: str = "running") -> str:
    pct = max(0.0, min(1.0, fraction)) * 100
    return (f'<div class="bench-progress {state}"><div class="bench-progress-head"><b>{escape(title)}</b>'
            f'<span>{pct:.0f}%</span></div><div class="bench-progress-track"><div class="bench-progress-fill" '
            f'style="width:{pct:.1f}%"></div></div><div class="bench-progress-detail">{escape(detail)}</div></div>')


IDLE = progress_html(0, "Idle", "Pick a preset or fill the form, then press Run.", "idle")


def event_progress(event: Progress) -> str:
    """The bar names method, setting and repetition. Rows of one model variant are measured interleaved and
    finish together, so the bar follows the runner's own fraction of the work done."""
    reps = event.repetitions or 1
    fraction = event.fraction if event.fraction is not None else (
        (event.done_rows + (event.repetition - 1 if event.repetition else 0) / reps) / max(event.total_rows, 1))
    parts = [f"{event.done_rows} of {event.total_rows} rows done"]
    if event.method:
        parts.append(f"method {event.method}")
        parts.append(f"setting {event.setting}")
    if event.repetition:
        parts.append(f"repetition {event.repetition}/{event.repetitions}")
    title = f"{event.method} [{event.setting}]" if event.method else event.message
    return progress_html(fraction, title, " · ".join(parts))


def errors_md(rows: list[dict]) -> str:
    """Failed rows, shown above the table: an OOM or a failed model load must not hide in a column."""
    bad = [r for r in rows if r.get("status") != "ok"]
    if not bad:
        return ""
    lines = [f"- **{escape(str(r['method']))} [{escape(str(r['setting']))}]** "
             f"`{r['status']}`: {escape(str(r.get('error', '')))}" for r in bad]
    if len(bad) == len(rows):  # nothing to keep: say so, not "the other rows are fine"
        head = f"**{'The row' if len(rows) == 1 else f'All {len(rows)} rows'} failed** (no figures were measured):"
    else:
        head = f"**{len(bad)} of {len(rows)} rows failed** (the other rows are fine and kept):"
    return f'<div class="bench-errors">\n\n{head}\n\n' + "\n".join(lines) + "\n\n</div>"


def run_failed_md(problem: str, kept: int) -> str:
    """A run that threw (not a failed row): the rows before it are already on disk."""
    return (f'<div class="bench-errors">\n\n**Run failed:** {escape(problem)}\n\n'
            f"{kept} finished rows are kept.\n\n</div>")


def summary_md(rows: list[dict], seconds: float | None = None, note: str = "") -> str:
    """The line above the Results charts: which run, what ran where, how many rows. note: where it came from."""
    if not rows:
        return ("No run yet. Press **Run** on the Run page; when the results file has runs, the newest shows "
                "here, and every run is in **History**.")
    r = rows[0]
    ok = sum(x.get("status") == "ok" for x in rows)
    took = f" · {seconds:.0f} s" if seconds is not None else ""
    name = str(r.get("run_name") or "")
    name = "" if name in ("", "nan", "<NA>") else f" **{escape(name)}**"
    when = str(r.get("timestamp", ""))[:16].replace("T", " ")
    return ((f"{note}\n\n" if note else "")
            + f"**Run `{r['run_id']}`**{name} · {escape(when)} · model `{r['model']}` · {r['device']} "
            f"({escape(str(r.get('device_name', '')))}) · {len(rows)} {'row' if len(rows) == 1 else 'rows'}, "
            f"{ok} ok{took}. *tok/s per sequence* = one sequence's new tokens / its call's "
            f"latency; *aggregate tok/s* = all new tokens of a call / its latency; they are never mixed in a chart.")
