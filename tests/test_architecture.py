"""The architecture as a specification: the folders are layers and every import points down LAYERS, one list per
axis that every consumer reads, `--help` without torch, and no import cycles between modules or folders."""
import ast
import dataclasses
import json
import subprocess
import sys

import pytest

from conftest import ROOT

# The layers, top first. A module may import its own layer and the layers below it, never one above; lazy
# imports (inside functions) count the same.
LAYERS = [
    "bench",      # the app: config, cli, runner, dashboard/
    "views",      # charts (FIGURES), the CLI table, the HTML report, run comparison, samples HTML
    "store",      # runs.csv + outputs.jsonl, requests.jsonl, the run notebook sidecar
    "scenarios",  # SCENARIOS: per_call, load, capacity
    "engines",    # ENGINES: hf, hf_compiled, fast/, continuous, server/
    "metrics",    # METRICS and trackers, rows built from them, statistics, the environment
    "decoding",   # METHODS and the method seam (decoding/types.py)
    "models",     # loading, variants, devices, prompts, the shipped configs, the tiny pair
]
PACKAGES = tuple(LAYERS)
# Entry points sit above every layer: they may import any of them, and nothing imports them.
ENTRY_POINTS = ("app.py", "benchmarks", "scripts", "models/tiny/__main__.py")


def test_every_consumer_reads_the_method_registry(tmp_path):
    from bench import cli
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


def test_an_engine_or_scenario_option_is_one_entry_that_reaches_config_flags_form_and_rows():
    """The fast engine's former BENCH_FAST_* switches are `options` of its EngineSpec, as the load keys are of
    the load scenario: each is a config key, a flag and a form field with no other edit, and no environment
    switch is left in the engines."""
    from bench import cli
    from bench.config import Config
    from bench.dashboard.form import config_fields
    from engines import ENGINES
    from scenarios import SCENARIOS

    help_text, form = cli.parser().format_help(), {f.name for f in config_fields()}
    declared = {k for e in ENGINES.values() for k in e.options} | {k for s in SCENARIOS.values() for k in s.options}
    assert {"compile", "fast_fuse", "fast_tuning", "fast_nosync", "cb_num_blocks", "endpoint", "concurrency"} <= declared
    for key in declared:
        assert key in Config.__dataclass_fields__ and key in form
        assert "--" + key.replace("_", "-") in help_text
    for path in (ROOT / "engines").rglob("*.py"):
        assert "os.environ" not in path.read_text() or path.parent.name == "server", path  # the server: its API key


def test_no_method_name_is_written_outside_its_own_file():
    """Adding a method touches its file and a registry line: nothing else may list methods by name."""
    from decoding import METHODS

    allowed = {ROOT / "decoding" / f"{name}.py" for name in METHODS} | {ROOT / "decoding" / "__init__.py"}
    offenders = []
    for package in LAYERS:
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


def project_files() -> dict[str, object]:
    """Every Python file of the project, tests and docs aside: relative path -> Path."""
    files = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("tests", "docs", ".venv", ".cache", ".git", "results") or rel.parts[0].startswith("."):
            continue
        files[rel.as_posix()] = path
    return files


def imported_tops(path) -> list[tuple[int, str]]:
    """(line, first name) of every absolute import in the file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
    return out


def is_entry_point(rel: str) -> bool:
    return any(rel == e or rel.startswith(e.rstrip("/") + "/") for e in ENTRY_POINTS)


def upward_imports(files: dict[str, object]) -> list[str]:
    """Imports that point up LAYERS, or into an entry point, as 'file:line layer -> layer'."""
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    entry_modules = {e.removesuffix(".py").replace("/", ".") for e in ENTRY_POINTS}
    bad = []
    for rel, path in sorted(files.items()):
        for line, module in imported_tops(path):
            if any(module == m or module.startswith(m + ".") for m in entry_modules):
                bad.append(f"{rel}:{line} imports the entry point {module}")
                continue
            if is_entry_point(rel):
                continue
            here, there = rel.split("/")[0], module.split(".")[0]
            if here not in rank:
                bad.append(f"{rel}:{line} lies outside every layer; add its folder to LAYERS")
            elif there in rank and rank[there] < rank[here]:
                bad.append(f"{rel}:{line} {here} -> {there} points up")
    return bad


def folder_graph(files: dict[str, object]) -> dict[str, set[str]]:
    graph = {layer: set() for layer in LAYERS}
    for rel, path in files.items():
        here = rel.split("/")[0]
        if is_entry_point(rel) or here not in graph:
            continue
        graph[here] |= {m.split(".")[0] for _, m in imported_tops(path) if m.split(".")[0] in graph} - {here}
    return graph


def test_every_folder_is_a_layer_and_every_import_points_down():
    files = project_files()
    tops = {rel.split("/")[0] for rel in files if "/" in rel and not is_entry_point(rel)}
    assert tops <= set(LAYERS), f"folders outside LAYERS: {sorted(tops - set(LAYERS))}"
    assert not (bad := upward_imports(files)), "\n".join(bad)


def test_an_upward_or_lazy_upward_import_fails(tmp_path):
    """The check itself: a model-layer module that lazily imports the runner is caught, so is one importing an
    entry point, and a plain downward import is not."""
    up = tmp_path / "up.py"
    up.write_text("def f():\n    from bench.runner import run\n    import views.charts\n")
    down = tmp_path / "down.py"
    down.write_text("from decoding.types import Request\nimport models.loading\n")
    entry = tmp_path / "entry.py"
    entry.write_text("import benchmarks.fast_engine\n")
    bad = upward_imports({"models/up.py": up, "engines/down.py": down, "metrics/entry.py": entry})
    assert bad == ["metrics/entry.py:1 imports the entry point benchmarks.fast_engine",
                   "models/up.py:2 models -> bench points up", "models/up.py:3 models -> views points up"]


def test_no_cycle_between_folders():
    graph = folder_graph(project_files())
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]  # and the check sees one between two folders


def non_test_lines() -> dict[str, int]:
    """Top-level package (or entry point) -> lines of Python in it."""
    lines: dict[str, int] = {}
    for rel, path in project_files().items():
        top = rel.split("/")[0]
        lines[top] = lines.get(top, 0) + len(path.read_text().splitlines())
    return lines


def test_no_package_holds_more_than_a_quarter_of_the_code():
    lines = non_test_lines()
    total = sum(lines.values())
    assert {t: n for t, n in lines.items() if n > 0.25 * total} == {}, (total, lines)


def test_no_module_outside_the_chart_catalogue_exceeds_400_lines():
    long = {rel: n for rel, path in project_files().items()
            if (n := len(path.read_text().splitlines())) > 400 and rel != "views/charts.py"}
    assert long == {}


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
