"""The architecture as a specification: one list per axis that every consumer reads, `--help` without
torch, and no import cycles anywhere in the project."""
import ast
import dataclasses
import json
import subprocess
import sys

import pytest

from conftest import ROOT

PACKAGES = ("bench", "decoding", "engines", "metrics", "scenarios")


def test_every_consumer_reads_the_method_registry(tmp_path):
    from views import charts, table  # noqa: F401
    from bench import cli, config  # noqa: F401
    from bench.config import Config
    from bench.runner import points
    from decoding import METHODS, Settings

    names = tuple(METHODS)
    assert names[0] == "standard" and "typical" in names
    assert Config.__dataclass_fields__["methods"].metadata["choices"] == names  # config choices
    assert dataclasses.fields(Config)[2].default_factory() == list(names)  # default: every method
    for m in METHODS.values():  # help text in --help, README, dashboard
        assert m.help in Config.__dataclass_fields__["methods"].metadata["help"]
    for key in METHODS["typical"].options:  # a method's own keys reach Config, Settings, flags
        assert key in Config.__dataclass_fields__ and key in {f.name for f in dataclasses.fields(Settings)}
        assert "--" + key.replace("_", "-") in cli.parser().format_help()
    # Sweep points come from the specs, in registry order, whatever order the config lists.
    config = Config.from_dict(dict(model="tiny/target", draft_model="tiny/draft", methods=list(reversed(names)),
                                   batch_sizes=[1, 2], results=str(tmp_path / "r.csv")), check_models=False)
    got = [p.method for p in points(config)]
    assert got == sorted(got, key=names.index)
    assert [p.batch_size for p in points(config) if p.method == "batched"] == [1, 2]


def test_every_consumer_reads_the_engine_and_metric_registries():
    from bench.config import Config
    from metrics.rows import COLUMNS
    from engines import ENGINES
    from metrics import METRICS, TRACKERS

    assert Config.__dataclass_fields__["engine"].metadata["choices"] == tuple(ENGINES)
    for spec in ENGINES.values():
        assert spec.help in Config.__dataclass_fields__["engine"].metadata["help"]
    for metric in METRICS:  # each metric's declared columns are CSV columns, in its order
        start = COLUMNS.index(metric.columns[0])
        assert COLUMNS[start:start + len(metric.columns)] == list(metric.columns)
    assert all(t in METRICS and hasattr(t, "__enter__") for t in TRACKERS)


def test_no_method_name_is_written_outside_its_own_file():
    """Adding a method touches its file and a registry line: nothing else may list methods by name."""
    from decoding import METHODS

    allowed = {ROOT / "decoding" / f"{name}.py" for name in METHODS} | {ROOT / "decoding" / "__init__.py"}
    offenders = []
    for package in ("bench", "engines", "metrics", "scenarios", "decoding"):
        for path in (ROOT / package).rglob("*.py"):
            if path in allowed:
                continue
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and node.value in ("nucleus", "beam_search", "batched",
                                                                       "speculative", "prompt_lookup", "typical"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not offenders, offenders


def test_help_does_not_import_torch():
    code = ("import runpy, sys; sys.argv = ['app.py', '--help']\n"
            "try:\n    runpy.run_path('app.py', run_name='__main__')\nexcept SystemExit as e:\n    assert not e.code\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--max-new-tokens" in done.stdout  # the help really printed
    assert done.stdout.strip().splitlines()[-1] == "False", "python app.py --help imported torch"


def module_imports() -> dict[str, set[str]]:
    """Project module -> project modules it imports (at any depth of the file: lazy imports count too)."""
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in modules and t != name}
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    graph = module_imports()
    assert "bench.cli" in graph and "decoding" in graph
    # A package's __init__ importing its own modules is how registries are built; a module importing
    # its package back is the cycle that matters, and it is still caught.
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


@pytest.mark.parametrize("preset", sorted(p.stem for p in (ROOT / "presets").glob("*.json")))
def test_presets_name_only_registered_methods_and_engines(preset):
    from decoding import METHODS
    from engines import ENGINES

    data = json.loads((ROOT / "presets" / f"{preset}.json").read_text())
    assert set(data.get("methods", [])) <= set(METHODS)
    engines = data.get("engine", [])
    assert set([engines] if isinstance(engines, str) else engines) <= set(ENGINES)
