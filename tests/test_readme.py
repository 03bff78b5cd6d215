"""The README documents every CSV column and config key, so the docs cannot drift from the code."""
import dataclasses

from bench.config import Config
from store.archive import COLUMNS
from conftest import ROOT


def test_readme_documents_every_column_and_key():
    readme = (ROOT / "README.md").read_text()
    missing = [c for c in COLUMNS if f"`{c}`" not in readme]
    assert not missing, f"CSV columns missing from README: {missing}"
    keys = [f.name for f in dataclasses.fields(Config) if f"`{f.name}`" not in readme]
    assert not keys, f"config keys missing from README: {keys}"


def test_readme_quick_start_commands_exist():
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/app.sh" in readme and "bash scripts/test.sh" in readme
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
