"""The verdict's forms: plain text for the CLI, Markdown for History, HTML for the Results card and the report.
views/verdict.py decides what is said; these only lay it out, so every view says the same words."""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from html import escape


@dataclass
class Answer:
    topic: str  # "Fastest for one user"
    text: str  # the answer in plain words, its figure and interval included


@dataclass
class Verdict:
    warnings: list[str] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Every statement once, as text() words it (the other forms only mark them up)."""
        return [f"Warning: {w}" for w in self.warnings] + [f"{a.topic}: {a.text}" for a in self.answers]

    def text(self) -> str:
        body = [textwrap.fill(line, 110, initial_indent="  ", subsequent_indent="    ") for line in self.lines()]
        return "\n".join(["Verdict:"] + (body or ["  nothing to compare yet"]))

    def markdown(self) -> str:
        items = [f"- ⚠ **Warning:** {md(w)}" for w in self.warnings] + \
                [f"- **{md(a.topic)}:** {md(a.text)}" for a in self.answers]
        return "**Verdict**\n\n" + ("\n".join(items) if items else "nothing to compare yet")

    def html(self) -> str:
        warnings = "".join(f'<li class="bench-verdict-warning"><b>Warning:</b> {escape(w)}</li>'
                           for w in self.warnings)
        answers = "".join(f'<li><b>{escape(a.topic)}:</b> {escape(a.text)}</li>' for a in self.answers)
        empty = "" if warnings or answers else "<li>nothing to compare yet</li>"
        return (f'<div class="bench-verdict"><div class="bench-verdict-head">Verdict</div>'
                f'<ul>{warnings}{answers}{empty}</ul></div>')


def md(s: str) -> str:
    """Plain words as Markdown: no markup, no HTML from a run's name."""
    s = escape(s, quote=False)
    for ch in "\\`*_":
        s = s.replace(ch, "\\" + ch)
    return s
