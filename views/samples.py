"""Generated texts side by side, one card per method x setting, the first token that leaves standard greedy's text
highlighted: shown by the dashboard's Samples page and the standalone HTML report.

Every value from a row or a user is escaped: prompts and texts are not markup.
"""
from __future__ import annotations

from html import escape

from decoding import BASELINE
from metrics.rows import RANDOM_WEIGHTS_NOTE


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
