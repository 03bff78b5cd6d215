"""HTML and Markdown the pages show: progress bar, errors, the run summary, generated texts side by side.

Plain functions of rows and events, so they can be checked without a browser. Every value from a row or
a user is escaped: model ids, prompts and error texts are not markup.
"""
from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from metrics.rows import RANDOM_WEIGHTS_NOTE
from decoding import BASELINE

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


def muted(text: str) -> str:
    return f'<p class="bench-muted">{escape(text)}</p>'


RANDOM_MODELS = ("tiny-random/",)  # model ids of the project's random test models (models/tiny/__init__.py)


def meaningless_text(rows: list[dict]) -> bool:
    """Texts of random weights (random_weights, or the project's random test models) mean nothing."""
    return any(str(r.get("random_weights")).lower() == "true" or str(r.get("model", "")).startswith(RANDOM_MODELS)
               or RANDOM_WEIGHTS_NOTE in str(r.get("notes", "")) for r in rows)


RANDOM_TEXT_NOTE = ("These texts come from random weights (random_weights, or a random test model): they are "
                    "meaningless by design. Speed and memory are real; the words are not.")


def marked_text(rec: dict) -> str:
    """The text, with the first token that differs from standard greedy's text highlighted."""
    text, span = rec["text"], rec.get("diverges_chars")
    if not span:
        return escape(text)
    start, end = span
    title = f"token {rec['diverges_at'] + 1}: the first that differs from standard greedy"
    return (f'{escape(text[:start])}<mark class="bench-diverge" title="{escape(title)}">'
            f'{escape(text[start:end]) or "&#8203;"}</mark>{escape(text[end:])}')


def match_badge(seqs: list[dict]) -> str:
    """'= greedy' when every sequence equals standard greedy's text, else where the first one differs."""
    marks = [s["greedy_match"] for s in seqs if "greedy_match" in s]
    if not marks or seqs[0].get("method") == BASELINE:
        return ""
    if all(marks):
        return '<b class="bench-same" title="token-identical to standard greedy">= greedy</b> · '
    at = min(s["diverges_at"] for s in seqs if "diverges_at" in s)
    return f'<b class="bench-differs" title="differs from standard greedy from token {at + 1}">&ne; greedy at {at + 1}</b> · '


def samples_html(records: list[dict], run_id: str | None, methods: list[str] | None = None,
                 completion: int = 0, rows: list[dict] | None = None) -> str:
    """Texts of one run, one block per prompt, one card per method x setting side by side. rows: the run's
    CSV rows, for the note that random weights write meaningless text."""
    in_run = [r for r in records if r.get("run_id") == run_id]
    if methods:
        in_run = [r for r in in_run if f"{r['method']} [{r['setting']}]" in methods]
    recs = [r for r in in_run if r.get("completion_index", 0) == completion]
    if not recs:
        have = sorted({int(r.get("completion_index", 0)) for r in in_run})
        if have and completion not in have:
            shown = f"1 to {have[-1] + 1}" if have == list(range(have[-1] + 1)) else ", ".join(str(c + 1) for c in have)
            return muted(f"This run has no completion {completion + 1}: its prompts have completions {shown}.")
        return muted("No texts for this selection (failed rows store no text).")
    note = f'<p class="bench-note">{escape(RANDOM_TEXT_NOTE)}</p>' if meaningless_text(rows or []) else ""
    variant = len({(r.get("engine"), r.get("quantization"), r.get("attention")) for r in recs}) > 1
    out = [note]
    for p in sorted({r["prompt_index"] for r in recs}):
        # Each text carries the prompt it answers (a config prompt or a load dataset's line); older files do not.
        prompt = next((r["prompt"] for r in recs if r["prompt_index"] == p and r.get("prompt")), f"prompt {p + 1}")
        cards = {}
        for r in (r for r in recs if r["prompt_index"] == p):
            key = f"{r['method']} [{r['setting']}]" + (f" · {r['engine']}/{r['quantization']}/{r['attention']}"
                                                      if variant else "")
            cards.setdefault(key, []).append(r)
        cells = []
        for key, seqs in cards.items():
            texts = "".join(f'<div class="bench-seq">{"<i>sequence " + str(s["sequence_index"] + 1) + "</i><br>" if len(seqs) > 1 else ""}'
                            f'{marked_text(s)}</div>' for s in seqs)
            cells.append(f'<div class="bench-card"><div class="bench-card-head">{escape(key)}'
                         f'<span>{match_badge(seqs)}{seqs[0]["new_tokens"]} tokens</span></div>{texts}</div>')
        out.append(f'<div class="bench-prompt"><div class="bench-prompt-text">Prompt {p + 1}: '
                   f'{"<br>" if chr(10) in prompt else ""}<code>{escape(prompt)}</code></div><div class="bench-cards">{"".join(cells)}</div></div>')
    return "".join(out)
