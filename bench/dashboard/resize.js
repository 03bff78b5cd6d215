() => {
  // Plotly sizes a figure to its container when it is drawn. A figure drawn while its tab is hidden (the
  // Run page streams into Results) gets Plotly's default 700 px and keeps it when the tab is shown, cut
  // off in a 600 px card. Every figure is watched: when its container's width changes (a tab shown, the
  // window resized), it is laid out again at that width.
  const watched = new WeakSet();
  const fit = (entries) => {
    for (const entry of entries) {
      const plot = entry.target, width = entry.contentRect.width;
      if (width > 0 && window.Plotly && plot._fullLayout && Math.abs(plot._fullLayout.width - width) > 1) {
        window.Plotly.Plots.resize(plot);
      }
    }
  };
  const observer = new ResizeObserver(fit);
  let pending = false;
  const scan = () => {
    pending = false;
    for (const plot of document.querySelectorAll(".js-plotly-plot")) {
      if (!watched.has(plot)) { watched.add(plot); observer.observe(plot); }
    }
  };
  new MutationObserver(() => { if (!pending) { pending = true; requestAnimationFrame(scan); } })
    .observe(document.body, {childList: true, subtree: true});
  scan();
}
