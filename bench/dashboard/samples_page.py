"""Samples: the texts each method generated for each prompt, side by side, read from outputs.jsonl."""
from __future__ import annotations

import gradio as gr
import pandas as pd

from bench.dashboard.shared import UI_ONLY, AppContext
from store import archive, notebook
from views.samples import muted, samples_html


def run_rows(results_path) -> pd.DataFrame:
    """The CSV's rows with the sidecar's names laid over them; none when the CSV cannot be read."""
    try:
        df = archive.load_rows(results_path) if results_path.exists() else pd.DataFrame(columns=archive.COLUMNS)
    except Exception:
        df = pd.DataFrame(columns=archive.COLUMNS)
    return notebook.apply_meta(df, notebook.load_meta(results_path))


def run_picker(rows: pd.DataFrame, runs: list[str]) -> list[tuple[str, str]]:
    """(label, run_id) of each run with texts, newest first: name or id, device, model, date, row count."""
    lines = {line["run_id"]: notebook.choice_label(line) for line in notebook.run_overview(rows).to_dict("records")}
    return [(lines.get(str(r), str(r)), r) for r in runs]


class SamplesPage:
    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        with gr.Tab("Samples", id="samples", elem_id="samples-tab") as self.tab:
            with gr.Row():
                self.run = gr.Dropdown([], label="Run", elem_id="samples-run", scale=3)
                self.completion = gr.Number(1, label="Completion of each prompt", precision=0, minimum=1,
                                            elem_id="samples-completion", scale=1)
            self.methods = gr.CheckboxGroup([], label="Methods side by side (none = all)", elem_id="samples-methods")
            self.view = gr.HTML("", elem_id="samples-view")

    def wire(self, run_state: gr.State) -> None:
        """Redraw on any pick and on opening the tab; run_state is the Run page's latest run_id."""
        outputs = [self.run, self.methods, self.view]
        args = dict(fn=self.show, inputs=[self.run, self.methods, self.completion, run_state], outputs=outputs,
                    **UI_ONLY)
        for trigger in (self.run.input, self.methods.input, self.completion.input, self.tab.select):
            trigger(**args)
        # A new run of this session becomes the run shown here.
        run_state.change(self.show_latest, [run_state, self.methods, self.completion], outputs, **UI_ONLY)

    def show(self, run_id, methods, completion, current):
        """The picked run (else this session's latest, else the newest on disk) and its method cards."""
        records = archive.load_outputs(self.ctx.results_path)
        runs = list(dict.fromkeys(r.get("run_id") for r in reversed(records)))
        run_id = run_id if run_id in runs else (current if current in runs else (runs[0] if runs else None))
        in_run = [r for r in records if r.get("run_id") == run_id]
        keys = list(dict.fromkeys(f"{r['method']} [{r['setting']}]" for r in in_run))
        methods = [m for m in methods or [] if m in keys]
        if run_id is None:
            where = archive.outputs_path(self.ctx.results_path)
            return gr.update(choices=[], value=None), gr.update(choices=[], value=[]), \
                muted(f"No generated texts yet in {where}.")
        rows = run_rows(self.ctx.results_path)
        completion = max(int(completion or 1), 1) - 1  # the page counts from 1, outputs.jsonl from 0
        body = samples_html(records, run_id, methods, completion,
                            rows[rows["run_id"].astype(str) == str(run_id)].to_dict("records"))
        return gr.update(choices=run_picker(rows, runs), value=run_id), gr.update(choices=keys, value=methods), body

    def show_latest(self, current, methods, completion):
        return self.show(current, methods, completion, current)
