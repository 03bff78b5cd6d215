"""What a method tells the rest of the tool about itself, so nothing else keeps a list of methods.

Each decoding/<name>.py ends with one `Method(...)`; decoding/__init__.py lists them. The config
choices, the runner's sweep points and row parameters, the CLI help, chart colours and dashboard
widgets are all read from these specs.
"""
from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from typing import Callable

from decoding.types import Engine, Generation, Inputs, Probe, SharedSettings, UnsupportedSetting


@dataclass(frozen=True)
class Point:
    """One row to measure: a method at one sweep setting (a batch size, a mode, a k)."""

    method: str
    setting: str  # what tells this row apart from the method's other rows, e.g. "batch_size=4"
    batch_size: int = 1
    do_sample: bool = False
    call: dict = field(default_factory=dict, compare=False)  # keyword arguments of the method call
    overrides: dict = field(default_factory=dict, compare=False)  # Settings this point sweeps, e.g. num_draft_tokens
    params: dict = field(default_factory=dict, compare=False)  # CSV row parameters that differ from a plain call


def one_point(setting: str, do_sample: bool = False) -> Callable:
    """Sweep of a method with a single row; `setting` may name config keys in braces."""
    def points(config, name: str) -> list[Point]:
        return [Point(name, setting.format(**vars(config)), do_sample=do_sample)]
    return points


@dataclass
class Method:
    name: str
    help: str  # one line, shown in --help, the README and the dashboard
    color: str  # one colour per method in every chart, so runs and pages compare at a glance
    generate: Callable[..., Generation]  # (inputs, settings, engine, probe, **point.call) -> Generation
    sweep: Callable = one_point("greedy")  # (config, name) -> [Point]
    batch_one: str = ""  # non-empty: runs batch size 1 only, and this says what to use instead
    engines: tuple[str, ...] | None = None  # engines that can run it; None: all
    needs_draft: bool = False  # loads the draft model
    drafts: bool = False  # proposes draft tokens: rows carry acceptance figures
    sweeps_batch: bool = False  # its rows differ by batch size
    options: dict = field(default_factory=dict)  # config keys of its own: name -> decoding.options.option(...)
    check: Callable | None = None  # (config) -> error message or None, for limits between keys

    def __call__(self, inputs: Inputs, settings: SharedSettings, engine: Engine, probe: Probe, **call) -> Generation:
        if self.batch_one and inputs.batch_size != 1:
            raise UnsupportedSetting(f"{self.name} runs batch size 1 only, got {inputs.batch_size}; {self.batch_one}")
        return self.generate(inputs, settings, engine, probe, **call)

    def points(self, config) -> list[Point]:
        return self.sweep(config, self.name)


def with_options(base: type, entries) -> type:
    """`base` plus the config keys the registry entries (methods, engines, scenarios) declare in `options`, as a
    dataclass of the same name and kind. Two entries may share a key only by declaring the same option."""
    declared: dict = {}
    for entry in entries:
        for key, opt in entry.options.items():
            if key in declared and declared[key][1] is not opt:
                raise ValueError(f"config key '{key}' is declared by {declared[key][0]} and {entry.name}")
            if key in getattr(base, "__dataclass_fields__", {}):
                raise ValueError(f"config key '{key}' of {entry.name} is already a shared key")
            declared.setdefault(key, (entry.name, opt))
    # A fresh Field per class: dataclasses write the owner's details into the Field object.
    extra = [(key, object, field(default=opt.default, default_factory=opt.default_factory, metadata=opt.metadata))
             for key, (_, opt) in declared.items()]
    if not extra:
        return base
    return make_dataclass(base.__name__, extra, bases=(base,), frozen=base.__dataclass_params__.frozen,
                          namespace={"__module__": base.__module__, "__doc__": base.__doc__})
