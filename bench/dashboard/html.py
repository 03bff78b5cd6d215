"""HTML and Markdown the pages show: progress bar, errors, the run summary (texts side by side: views/samples.py).

Plain functions of rows and events, so they can be checked without a browser. Every value from a row or
a user is escaped: model ids, prompts and error texts are not markup.
"""
from __future__ import annotations

from html import escape

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
CANCELLED = ("Cancelled: this run never started", "Stop was pressed while it waited in the queue; nothing was "
             "run and nothing was written")


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def job_fraction(job) -> float:
    """Of the whole run: rows done, plus this variant's calls (or the scenario's own fraction) of its rows."""
    event, total = job.progress, max(job.total, 1)
    if event is None:
        return len(job.rows) / total
    planned, done = getattr(event, "calls_planned", 0), getattr(event, "calls_done", 0)
    if planned:
        return min(1.0, (event.done_rows + done / planned * job.per_variant) / total)
    return max(len(job.rows) / total, event.fraction if event.fraction is not None else 0.0)


def job_progress(job, ahead: int = 0, results: str = "") -> str:
    """The bar of a server-side run (bench/dashboard/jobs.py): where it is, by repetitions and calls, its elapsed
    time and an ETA from the calls measured so far; how it ended."""
    rows, total = job.rows, job.total
    if job.state == "queued":
        if job.stop.is_set():
            return progress_html(0, *CANCELLED, "stopped")
        return progress_html(0, "Waiting for the benchmark queue",
                             f"{plural(ahead, 'run')} ahead of this one; one benchmark runs at a time; "
                             "it starts here by itself (closing or reloading this page does not cancel it)", "idle")
    if job.state == "cancelled":
        return progress_html(0, *CANCELLED, "stopped")
    fraction, elapsed = job_fraction(job), f"elapsed {clock(job.elapsed())}"
    event = job.progress
    reps = (f"{event.repetitions_done} of {event.repetitions_planned} repetitions"
            if getattr(event, "repetitions_planned", 0) else "")
    if job.state == "running" and job.stop.is_set():
        return progress_html(fraction, "Stopping…", "the call in flight ends at its next step; whole repetitions "
                             f"are kept and written · {elapsed}", "stopping")
    if job.state == "running":
        if event is None:
            return progress_html(0, "Starting", f"{plural(total, 'row')} to measure · {elapsed}")
        parts = [p for p in (reps, f"{event.calls_done} of {event.calls_planned} calls"
                             if getattr(event, "calls_planned", 0) else "",
                             f"{len(rows)} of {plural(total, 'row')} written", elapsed) if p]
        if (eta := job.eta()) is not None:
            parts.append(f"about {clock(eta)} left")
        title = f"Measuring {event.method} [{event.setting}]" if event.method else event.message
        if event.method and "warming up" in event.message:
            title = f"Warming up {event.method} [{event.setting}]"
        return progress_html(fraction, title, " · ".join(parts))
    if job.state == "stopped":
        kept = (f"{plural(len(rows), 'row')} kept with their whole repetitions in {results}" if rows else
                "no whole repetition had been measured, so nothing was written")
        return progress_html(fraction, f"Stopped after {reps}" if reps else "Stopped", f"{kept} · {elapsed}",
                             "stopped")
    failed = sum(r.get("status") != "ok" for r in rows)
    if job.state == "failed":
        return progress_html(fraction, "Run failed", f"{job.error} · {plural(len(rows), 'finished row')} kept",
                             "failed")
    if rows and failed == len(rows):
        title = f"Failed: all {plural(len(rows), 'row')} failed"
    else:
        title = f"Done: {plural(len(rows), 'row')} in {job.elapsed():.0f} s" + (f", {failed} failed" if failed else "")
    return progress_html(1, title, f"appended to {results}", "failed" if failed else "done")


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
