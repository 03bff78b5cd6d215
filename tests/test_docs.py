"""The docs cannot drift from the code: the config-key and CSV-column tables in docs/ are generated from the live
registries by scripts/reference.py, every key and column has a description, and every link resolves."""
import importlib.util
import re

from conftest import ROOT


def reference():
    spec = importlib.util.spec_from_file_location("reference", ROOT / "scripts" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_tables_are_current():
    stale = reference().stale()
    assert not stale, f"stale generated tables in {stale}: run python scripts/reference.py"


def test_every_column_and_config_key_has_a_description():
    from bench.config import field_help
    from store.archive import COLUMNS

    ref = reference()
    helps = ref.column_help()
    assert list(helps) == list(COLUMNS)
    missing = [c for c in COLUMNS if not helps[c].strip()]
    assert not missing, f"columns without a description (the metric's `help`, or HELP in metrics/rows.py): {missing}"
    keys = [k for k, (text, _) in field_help().items() if not text.strip()]
    assert not keys, f"config keys without help: {keys}"
    for rel, (name, table) in ref.TABLES.items():  # and each of them reaches its table
        text = (ROOT / rel).read_text()
        names = COLUMNS if rel.endswith("columns.md") else list(field_help())
        assert not [n for n in names if f"`{n}`" not in text], rel


def test_the_check_names_a_stale_file(tmp_path, monkeypatch, capsys):
    ref = reference()
    for rel in ref.TABLES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text((ROOT / rel).read_text())
    monkeypatch.setattr(ref, "ROOT", tmp_path)
    assert ref.main(["--check"]) == 0
    config = tmp_path / "docs" / "config.md"
    config.write_text(config.read_text().replace("| `model` |", "| `modell` |"))
    assert ref.main(["--check"]) == 1
    assert "docs/config.md is stale" in capsys.readouterr().err
    assert ref.main([]) == 0 and ref.main(["--check"]) == 0  # rewriting fixes it
    assert config.read_text() == (ROOT / "docs" / "config.md").read_text()


def test_links_in_the_docs_resolve():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "models" / "tiny" / "README.md"]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            path = target.split("#")[0]
            if path and not re.match(r"[a-z]+://", path) and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_readme_stays_short_and_names_the_docs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for page in ("ARCHITECTURE", "measurement", "config", "columns", "engines", "serving", "store", "dashboard", "gpu"):
        assert f"(docs/{page}.md)" in readme, page


def test_readme_quick_start_commands_exist():
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/app.sh --preset tiny" in readme and "bash scripts/test.sh" in readme
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_every_config_key_has_a_human_label_used_by_the_form_and_the_docs():
    """Labels live in one place, each key's declaration; the dashboard's form and docs/config.md both read it."""
    from dataclasses import fields

    from bench.config import Config
    from bench.dashboard.form import label_of

    text = (ROOT / "docs" / "config.md").read_text()
    for f in fields(Config):
        label = f.metadata.get("label")
        assert label and "_" not in label, f.name  # words, not the raw key
        assert label_of(f.name) == label
        assert f"| `{f.name}` | {label} |" in text.replace("\\|", "|")
