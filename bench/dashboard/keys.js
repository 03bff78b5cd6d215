() => {
  // Keyboard use of the page, where gradio's own widgets stop short: a focused tab moves with the arrow keys
  // and opens with Enter or Space; a target typed into an SLO explorer slider's box applies on Enter (gradio
  // applies it when the box loses focus, so Enter hands the focus back).
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (!(target instanceof Element)) return;
    const tab = target.closest('[role="tab"]');
    if (tab) {
      const tabs = [...tab.parentElement.querySelectorAll('[role="tab"]')];
      const step = {ArrowRight: 1, ArrowLeft: -1}[event.key];
      if (step) {
        event.preventDefault();
        event.stopPropagation();
        tabs[(tabs.indexOf(tab) + step + tabs.length) % tabs.length].focus();
      } else if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        event.stopPropagation();
        tab.click();
      }
      return;
    }
    if (event.key === "Enter" && target.matches("#slo-ttft input, #slo-tpot input")) {
      target.blur();
    }
  }, true);
}
