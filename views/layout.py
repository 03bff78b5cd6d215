"""The layout rules of every figure, in one place: views.charts runs laid_out on each figure of FIGURES.

From the top of a figure down, each part gets a height of its own, so no text box can sit on another at any
card width (tests/test_geometry.py checks it in Chromium at 1440 and 800 px):

    the modebar's strip     Plotly shows the modebar at the top right on hover; nothing else is drawn there
    the title               wrapped to fit the narrowest card (a half-width card at an 800 px window)
    the legend              horizontal, its rows counted from its entries (long names wrapped)
    a band                  for buttons (update menus) and subplot titles, right above the plot
    the plot                at least PLOT_MIN_PX tall, so a vertical axis title fits beside it
    category labels         wrapped when they fit side by side, else one upright line each, so none reaches
                            past the plot's left edge onto the axis title nor onto its neighbour

A bar's label drawn outside sits on the bar's end, where its whisker runs through it: it moves to the
whisker's top, upright when the labels are wider than their bars.
"""
from __future__ import annotations

import re
import textwrap

import plotly.graph_objects as go

MODEBAR_PX = 30
TITLE_LINE_PX = 20
TITLE_CHARS = 42  # 15 px text: a line fits a half-width card at an 800 px window (about 340 px)
LEGEND_ROW_PX = 20  # one line of 12 px legend text, with its gap
LEGEND_WIDTH_PX = 300  # the narrowest card's plot width a legend wraps in
LEGEND_CHARS = 34  # a longer entry is wrapped (a run's name, device and setting can be long)
BAND_PX = 28
PLOT_MIN_PX = 200
CATEGORY_CHARS = 18  # a category label's line when the labels fit side by side
UPRIGHT_CHARS = 32  # otherwise each label is one upright line (10 px text), cut with an ellipsis
CHAR_PX = 0.6  # average glyph width per px of font size
MENU_CHARS = 30  # a dropdown's choice, cut with an ellipsis (its title shows the whole name once picked)
DEFAULT_HEIGHT = 340


def wrap(text: str, width: int) -> str:
    """<br>-joined lines of at most width characters; existing <br> breaks are kept."""
    lines = [line for part in str(text or "").split("<br>")
             for line in textwrap.wrap(part, width, break_on_hyphens=False) or [""]]
    return "<br>".join(lines)


def plain(text: str) -> str:
    return re.sub(r"<(?!br)[^>]+>", "", str(text))


def legend_entries(fig: go.Figure) -> list:
    """The traces the legend will show: one per legend group, hidden ones left out."""
    if fig.layout.showlegend is False or (fig.layout.showlegend is None and len(fig.data) < 2):
        return []
    entries, seen = [], set()
    for t in fig.data:
        if getattr(t, "showlegend", False) is False or t.visible is False or not t.name:
            continue
        key = t.legendgroup or t.name
        if key not in seen:
            seen.add(key)
            entries.append(t)
    return entries


def legend_height(names: list[str], font_px: float = 12) -> float:
    """Height a horizontal legend takes in LEGEND_WIDTH_PX: entries packed in rows, each row as tall as its
    tallest entry."""
    height, used, row = 0.0, 0.0, 0.0
    line_px = LEGEND_ROW_PX * font_px / 12
    for name in names:
        lines = plain(name).split("<br>")
        width = 44 + CHAR_PX * font_px * max(len(line) for line in lines)
        if used and used + width > LEGEND_WIDTH_PX:
            height, used, row = height + row, 0.0, 0.0
        used += width
        row = max(row, line_px * len(lines) + 2)
    return height + row


def axes_of(fig: go.Figure, letter: str) -> list[str]:
    return sorted(k for k in fig.layout.to_plotly_json() if re.fullmatch(f"{letter}axis\\d*", k)) or [f"{letter}axis"]


def category_labels(fig: go.Figure) -> float:
    """Wraps the labels of each categorical x axis and turns them upright when they would not sit side by side
    in the narrowest card; returns the height the labels need beyond style()'s allowance."""
    extra = 0.0
    for axis in axes_of(fig, "x"):
        ref = "x" + axis[5:]
        cats = []
        for t in fig.data:
            on_axis = hasattr(t, "xaxis") and (t.xaxis or "x") == ref and t.x is not None and len(t.x)
            if on_axis and all(isinstance(v, str) for v in t.x):
                cats += [v for v in t.x if v not in cats]
        if not cats:
            continue
        text = [wrap(plain(c), CATEGORY_CHARS) for c in cats]
        longest = max(len(line) for t in text for line in t.split("<br>"))
        upright = len(cats) * (CHAR_PX * 12 * longest + 8) > LEGEND_WIDTH_PX / max(1, len(axes_of(fig, "x")))
        if upright:  # one line each, side by side at any card width; the hover names the whole setting
            text = [c if len(c) <= UPRIGHT_CHARS else c[:UPRIGHT_CHARS - 1] + "…" for c in map(plain, cats)]
            longest = max(map(len, text))
            extra = max(extra, CHAR_PX * 10 * longest - 40)
        fig.layout[axis].update(tickmode="array", tickvals=cats, ticktext=text, tickangle=-90 if upright else 0,
                                tickfont_size=10 if upright else None, automargin=True)
    return extra


def menus(fig: go.Figure) -> None:
    """Update menus sit in the band right above the plot (paper y 1 is the plot's top edge); a dropdown's
    long choices are cut, and titles the buttons set are wrapped like the figure's own."""
    for menu in fig.layout.updatemenus:
        menu.update(y=1.0, yanchor="bottom", pad=dict(t=0, b=4, l=0, r=4))
        for button in menu.buttons:
            if menu.type != "buttons" and button.label and len(button.label) > MENU_CHARS:
                button.label = button.label[:MENU_CHARS - 1] + "…"
            if button.args and len(button.args) > 1 and "title.text" in (button.args[1] or {}):
                button.args = [button.args[0], {**button.args[1], "title.text": wrap(button.args[1]["title.text"],
                                                                                    TITLE_CHARS)}]


def subplot_titles(fig: go.Figure) -> float:
    """Annotations above the plot (subplot titles) wrapped to their subplot; returns the band they need."""
    above = [a for a in fig.layout.annotations if a.yref == "paper" and (a.y or 0) >= 1]
    columns = max(1, len(axes_of(fig, "x")))
    lines = 1
    for a in above:
        a.text = wrap(a.text, max(12, CATEGORY_CHARS * 2 // columns + 4))
        a.font.size = a.font.size or 12
        lines = max(lines, a.text.count("<br>") + 1)
    return (16 * lines + 8) if above else 0


def labels_above_whiskers(fig: go.Figure) -> None:
    """Outside labels of bars with whiskers move to the whiskers' tops: a text trace in the bar's own slot of
    its group, or, for one group whose labels are wider than their bars, upright annotations."""
    moved = []
    grouped = sum(isinstance(t, go.Bar) for t in fig.data) > 1
    for i, bar in enumerate(fig.data):
        error = bar.error_y if isinstance(bar, go.Bar) else None
        if error is None or not error.visible or error.array is None or bar.text is None:
            continue
        if bar.textposition not in (None, "outside", "auto") or not any(str(t).strip() for t in bar.text):
            continue
        group = bar.offsetgroup or f"bars-{i}"
        if grouped:
            bar.offsetgroup = group
        tops = [(y if y == y else 0) + (e if e == e else 0) for y, e in zip(bar.y, error.array)]
        wide = max(len(str(t)) for t in bar.text) * CHAR_PX * 12 * len(bar.x) > LEGEND_WIDTH_PX
        if wide and not grouped:
            for x, y, t in zip(bar.x, tops, bar.text):
                if str(t).strip():
                    fig.add_annotation(x=x, y=y, text=str(t), textangle=-90, yanchor="bottom", showarrow=False,
                                       xref=bar.xaxis or "x", yref=bar.yaxis or "y", font=dict(size=10),
                                       yshift=2)
        else:
            moved.append(go.Scatter(x=bar.x, y=tops, text=list(bar.text), mode="text", textposition="top center",
                                    textfont=bar.textfont.to_plotly_json(), showlegend=False, hoverinfo="skip",
                                    cliponaxis=False, offsetgroup=group if grouped else None, xaxis=bar.xaxis,
                                    yaxis=bar.yaxis))
        labelled = max(len(str(t)) for t in bar.text) if wide and not grouped else 1
        headroom = 1.15 + (0.03 * labelled if wide and not grouped else 0)
        bar.text = None
        axis = "yaxis" if (bar.yaxis or "y") == "y" else f"yaxis{bar.yaxis[1:]}"
        top = max([t for t in tops if t == t], default=0)
        shown = fig.layout[axis].range
        low = shown[0] if shown is not None and shown[0] is not None else 0
        if top > 0 and (shown is None or shown[1] is None or shown[1] < top * headroom):
            fig.layout[axis].range = [low, top * headroom]  # the labels clear of the plot's top
    for trace in moved:
        fig.add_trace(trace)
    if moved and grouped:
        fig.update_layout(scattermode="group")


def laid_out(fig: go.Figure) -> go.Figure:
    """Applies the rules above to a finished figure."""
    layout = fig.layout
    title = wrap(layout.title.text, TITLE_CHARS) if layout.title.text else ""
    lines = title.count("<br>") + 1 if title else 0
    legend_at = MODEBAR_PX + TITLE_LINE_PX * lines + 8
    entries = legend_entries(fig)
    for t in entries:
        t.name = wrap(t.name, LEGEND_CHARS)
    legend_px = legend_height([t.name for t in entries], layout.legend.font.size or 12)
    labels_above_whiskers(fig)
    band = max(BAND_PX if layout.updatemenus else 0, subplot_titles(fig))
    top = int(legend_at + legend_px + band + 8)
    labels_px = category_labels(fig)
    old_top, bottom = layout.margin.t or 70, layout.margin.b or 40
    height = (layout.height or DEFAULT_HEIGHT) + max(0, top - old_top) + labels_px
    if any(True for a in fig.data):  # a figure with data keeps a plot tall enough for its axis titles
        height = max(height, top + PLOT_MIN_PX + bottom + labels_px)
    fig.update_layout(height=int(height), margin_t=top,
                      # Plotly anchors a title by its first line and hangs the others below it.
                      title=dict(text=title, yref="container", yanchor="bottom",
                                 y=1 - (MODEBAR_PX + TITLE_LINE_PX) / height, x=0.01, xanchor="left"),
                      legend=dict(orientation="h", yref="container", y=1 - legend_at / height, yanchor="top", x=0,
                                  xanchor="left"))
    menus(fig)
    return fig


def laid_out_by(draw):
    """A figure function whose figures follow the layout rules."""
    def figure(df):
        return laid_out(draw(df))

    figure.__name__, figure.__doc__ = draw.__name__, draw.__doc__
    return figure
