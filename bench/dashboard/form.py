"""The config form: one component per Config field, generated from the field metadata so it never drifts
from what the CLI and presets accept. Values go form -> dict -> Config.from_dict, never around it."""
from __future__ import annotations

import re
from dataclasses import Field, fields

import gradio as gr

from bench.config import Config, ConfigError, default_of
from decoding import METHODS
from engines import ENGINES
from models.devices import cuda_problem
from scenarios import SCENARIOS

SECTIONS = {  # section -> rows of the shared keys; the axes' own keys follow (axis_sections), the rest in "More settings"
    "Run": [["name", "tags"], ["run_notes"]],
    "Models": [["model", "draft_model"], ["dtype", "device", "engine"], ["quantization", "attention"],
               ["quantize_draft", "random_weights"]],
    "Workload": [["prompts"], ["completions_per_prompt", "max_new_tokens", "prompt_length"],
                 ["chat_template", "thinking", "stop_at_eos"]],
    "Methods": [["methods"], ["temperature", "top_p", "top_k"],
                ["num_beams", "num_return_sequences", "length_penalty"], ["early_stopping", "batched_do_sample"],
                ["batch_sizes", "speculative_modes"], ["num_draft_tokens", "prompt_lookup_num_tokens"]],
    "Measurement": [["warmup", "repetitions", "seed"], ["results"]],
}
# Open at first: what most runs change. The rest (run name and notes, measurement protocol, engine and scenario
# options, More settings) starts collapsed, so the form is short and the run bar's Run never far.
OPEN_SECTIONS = ("Models", "Workload", "Methods")


def config_fields() -> list[Field]:
    return list(fields(Config))


def rows_of(keys: list[str], width: int = 3) -> list[list[str]]:
    return [keys[i:i + width] for i in range(0, len(keys), width)]


def axis_sections() -> dict[str, list[list[str]]]:
    """The keys each method, engine and scenario declares, read from the registries: a method's under Methods,
    each engine's on rows of its own under Engine options, a scenario's in a section named after it. A key two
    engines share (compile) shows once, with the first."""
    seen: set[str] = set()

    def fresh(options) -> list[str]:
        keys = [k for k in options if k not in seen]
        seen.update(keys)
        return keys

    out = {"Methods": rows_of([k for m in METHODS.values() for k in fresh(m.options)]),
           "Engine options": [row for e in ENGINES.values() for row in rows_of(fresh(e.options))]}
    for scenario in SCENARIOS.values():
        if keys := fresh(scenario.options):
            out[f"{scenario.name.replace('_', ' ').capitalize()} scenario"] = rows_of(keys)
    return out


def kind_of(f: Field):
    """The field's kind as decoding/options.py parsed it: the same reading the config and the CLI use."""
    return f.metadata["type"]


def is_text_list(f: Field) -> bool:
    """List fields without choices are typed as text: prompts one per line, numbers comma separated."""
    return kind_of(f).listed and not f.metadata["choices"]


def make_input(f: Field, value=None) -> gr.components.Component:
    m, kind = f.metadata, kind_of(f)
    # Choices need room for their longest value (a clipped "openai-chat" reads as another choice).
    widest = max((len(str(c)) for c in m["choices"] or ()), default=0)
    common = dict(label=label_of(f.name), info=m["help"], min_width=max(120, 60 + 9 * widest),
                  elem_id="cfg-" + f.name.replace("_", "-"),
                  value=to_form(f, default_of(f) if value is None else value))
    if f.name == "results":  # pinned to the app's results file: History and downloads read that folder
        common["info"] += " (fixed by the dashboard: start it with --results to change)"
        return gr.Textbox(interactive=False, **common)
    if not kind.listed:
        if kind.element == "bool":
            return gr.Checkbox(**common)
        if kind.element in ("int", "float"):
            # No min/max here: out-of-range values reach Config, which words the error like the CLI does.
            return gr.Number(precision=None, **common)
        if m["choices"]:
            return gr.Dropdown(choices=list(m["choices"]), **common)
        return gr.Textbox(**common)
    if m["choices"]:
        return gr.CheckboxGroup(choices=list(m["choices"]), **common)
    if kind.element == "str":
        return gr.Textbox(lines=4, max_lines=12, **common)
    return gr.Textbox(placeholder="e.g. 1, 4, 16", **common)


def to_form(f: Field, value):
    """Config value -> what the field's component shows."""
    kind = kind_of(f)
    if f.metadata["choices"] and kind.listed:
        return value if isinstance(value, list) else [value]
    if is_text_list(f) and kind.element == "str":
        return join_texts(value if isinstance(value, list) else [value])
    if is_text_list(f):
        items = value if isinstance(value, list) else [value]
        return ", ".join(str(v) for v in items)
    if kind.optional:
        return value or ""
    return value


def from_form(f: Field, value):
    """Component value -> config value. Anything unparsable is passed on for Config to reject in its words."""
    kind = kind_of(f)
    if is_text_list(f) and kind.element == "str":
        return split_texts(value or "")
    if is_text_list(f):
        items = [int(t) if t.strip().lstrip("-").isdigit() else t.strip()
                 for t in str(value or "").replace(";", ",").replace(" ", ",").split(",") if t.strip()]
        return items[0] if kind.single and kind.element == "int" and len(items) == 1 else items
    if kind.element == "int" and not kind.listed and isinstance(value, float) and value.is_integer():
        return int(value)  # gr.Number hands back floats; keep the JSON tidy
    if kind.optional:
        return (value or "").strip() or None
    if kind.element == "str" and not kind.listed and isinstance(value, str):
        return value.strip()
    if f.metadata["choices"] and kind.listed:
        return list(value or [])
    return value


SEPARATOR = "---"


def join_texts(items: list) -> str:
    """Texts -> one textbox. One per line while none spans lines; otherwise a `---` line between them (and
    after a lone one), so code prompts keep their newlines and indentation."""
    items = [str(v) for v in items]
    if not any("\n" in v for v in items):
        return "\n".join(items)
    return f"\n{SEPARATOR}\n".join(items) + (f"\n{SEPARATOR}" if len(items) == 1 else "")


def split_texts(text: str) -> list[str]:
    """The inverse of join_texts: with a `---` line anywhere, the texts between those lines, verbatim;
    otherwise one text per non-blank line, trimmed."""
    lines = text.replace("\r\n", "\n").split("\n")
    if not any(line.strip() == SEPARATOR for line in lines):
        return [line.strip() for line in lines if line.strip()]
    groups, current = [], []
    for line in lines:
        if line.strip() == SEPARATOR:
            groups.append(current)
            current = []
        else:
            current.append(line)
    groups.append(current)
    return [t for t in ("\n".join(g) for g in groups) if t.strip()]


def form_dict(values: list) -> dict:
    return {f.name: from_form(f, v) for f, v in zip(config_fields(), values)}


def form_values(data: dict, results_path: str) -> list:
    """A (partial) config dict -> values for every form field; missing keys get Config's defaults."""
    out = []
    for f in config_fields():
        value = results_path if f.name == "results" else data.get(f.name, default_of(f))
        out.append(to_form(f, value))
    return out


def check(data: dict, check_models: bool = False) -> str:
    """'' when the dict makes a valid Config, else the ConfigError line the CLI would print. A device this
    machine lacks is refused here too, before anything loads."""
    try:
        config = Config.from_dict(data, check_models=check_models)
    except ConfigError as e:
        return str(e)
    return cuda_problem(config.device)


def label_of(name: str) -> str:
    """The key's `label` from its declaration (bench/config.py, or the method's, engine's or scenario's
    option), the one place labels live; the key in words for one that lacks it."""
    declared = Config.__dataclass_fields__[name].metadata.get("label") if name in Config.__dataclass_fields__ else None
    return declared or name.replace("_", " ").capitalize()


def form_words(message: str) -> str:
    """A ConfigError line as the form shows it: each key named by its label and its key ("Returned sequences
    (num_return_sequences)"), and an empty box called empty rather than JSON's null."""
    names = {f.name for f in config_fields()}

    def named(match: re.Match) -> str:
        key = match.group(1)
        return f"{label_of(key)} ({key})" if key in names else match.group(0)

    message = re.sub(r"config key '(\w+)'", named, message)
    return message.replace(", got null", ", got an empty box")


def build_form(results_path: str, initial: dict | None = None) -> list:
    """Sections of components in Config field order; returns them in that order for form_dict."""
    by_name = {f.name: f for f in config_fields()}
    # A key Config no longer has is skipped rather than breaking the page; new keys go to "More settings".
    layout = {title: list(rows) for title, rows in SECTIONS.items()}
    for title, rows in axis_sections().items():
        layout.setdefault(title, []).extend(rows)
    sections = {title: [[n for n in row if n in by_name] for row in rows] for title, rows in layout.items()}
    placed = {name for rows in sections.values() for row in rows for name in row}
    rest = [name for name in by_name if name not in placed]
    if rest:
        sections["More settings"] = [rest[i:i + 3] for i in range(0, len(rest), 3)]
    made = {}
    for title, rows in sections.items():
        with gr.Accordion(title, open=title in OPEN_SECTIONS, elem_id=f"section-{title.lower().replace(' ', '-')}"):
            for row in filter(None, rows):
                with gr.Row():
                    for name in row:
                        made[name] = make_input(by_name[name], (initial or {}).get(name))
    made["results"].value = results_path
    return [made[f.name] for f in config_fields()]
