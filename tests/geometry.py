"""Where a rendered Plotly figure's text boxes lie, read from the SVG Chromium drew: titles, legends, buttons
(update menus and the modebar), labels (bar texts, annotations, axis titles, tick labels) and error bars.

collisions(page, selector) -> one line per problem in every figure under `selector`:
  - two boxes of different parts that intersect, or two labels, or two tick labels of one axis (an error bar
    only counts against a label);
  - a text box that leaves the figure (clipped by its card);
  - a figure wider than its card.
"""
from __future__ import annotations

# Boxes shrink by SLACK px on each side before they are compared: glyph boxes carry their font's line gap, so
# two lines of text that merely touch are not a collision.
SLACK = 1.5

BOXES_JS = """([selector, slack]) => {
  const problems = [];
  const plots = [...document.querySelectorAll(selector)].filter(p => p.getBoundingClientRect().width > 0);
  for (const plot of plots) {
    const host = plot.closest('[id]');
    const name = host ? host.id : '?';
    const frame = plot.getBoundingClientRect();
    const card = plot.parentElement.getBoundingClientRect();
    const svg = plot.querySelector('.main-svg');
    if (svg && svg.getBoundingClientRect().width > card.width + 2)
      problems.push(`${name}: figure ${svg.getBoundingClientRect().width.toFixed(0)} px wide in a ${card.width.toFixed(0)} px card`);
    const items = [];
    const add = (kind, el, text) => {
      const r = el.getBoundingClientRect();
      if (r.width < 0.5 || r.height < 0.5) return;
      const style = getComputedStyle(el);
      if (style.display === 'none' || style.visibility === 'hidden') return;
      items.push({kind, text: (text ?? el.textContent ?? '').trim().slice(0, 40), r, el});
    };
    plot.querySelectorAll('.gtitle').forEach(e => add('title', e));
    plot.querySelectorAll('.legend').forEach(e => { const bg = e.querySelector('.bg'); add('legend', bg || e, 'legend'); });
    plot.querySelectorAll('.updatemenu-button, .updatemenu-header').forEach(e => add('button', e));
    plot.querySelectorAll('.modebar-group').forEach(e => add('modebar', e, 'modebar'));
    plot.querySelectorAll('.annotation-text-g').forEach(e => add('label', e));
    plot.querySelectorAll('.bartext, .textpoint text').forEach(e => add('label', e));
    plot.querySelectorAll('.g-xtitle, .g-ytitle, [class*="g-x"][class$="title"], [class*="g-y"][class$="title"]')
      .forEach(e => add('axis title', e));
    plot.querySelectorAll('.xtick text, .ytick text, [class*="xtick"] text, [class*="ytick"] text')
      .forEach(e => add('tick', e));
    plot.querySelectorAll('.errorbar path').forEach(e => add('error bar', e, 'error bar'));
    const seen = new Set();
    const unique = items.filter(i => !seen.has(i.el) && seen.add(i.el));
    for (const i of unique) {
      if (i.kind === 'error bar' || i.kind === 'modebar') continue;
      if (i.r.left < frame.left - 1 || i.r.right > frame.right + 1 || i.r.top < frame.top - 1 || i.r.bottom > frame.bottom + 1)
        problems.push(`${name}: ${i.kind} "${i.text}" leaves the figure`);
    }
    const hit = (a, b) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > 2 * slack &&
                          Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 2 * slack;
    for (let x = 0; x < unique.length; x++) for (let y = x + 1; y < unique.length; y++) {
      const a = unique[x], b = unique[y];
      if (a.el.contains(b.el) || b.el.contains(a.el)) continue;
      if (a.kind === b.kind && a.kind !== 'label' && a.kind !== 'tick') continue;
      if (a.kind === 'tick' && b.kind === 'tick' && a.el.closest('[class*="tick"]').parentNode !== b.el.closest('[class*="tick"]').parentNode) continue;
      const kinds = [a.kind, b.kind];
      if (kinds.includes('error bar') && !kinds.includes('label')) continue;
      // A legend's own box holds its entries; the modebar floats over the plot area only on hover.
      if (kinds.includes('legend') && a.el.closest('.legend') && b.el.closest('.legend')) continue;
      if (hit(a.r, b.r)) problems.push(`${name}: ${a.kind} "${a.text}" covers ${b.kind} "${b.text}"`);
    }
  }
  return problems;
}"""


def collisions(page, selector: str = ".js-plotly-plot") -> list[str]:
    return page.evaluate(BOXES_JS, [selector, SLACK])


def figures_drawn(page, selector: str) -> int:
    return page.evaluate("s => [...document.querySelectorAll(s)].filter(p => p.querySelector('.main-svg')).length",
                         selector)
