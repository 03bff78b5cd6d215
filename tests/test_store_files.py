"""Whose file it is: foreign files are refused, never rewritten; an older file of ours is upgraded in
place of its real file, keeping its mode, owner and the symlinks pointing at it."""
import os

import pandas as pd
import pytest

from store import archive, files


def row(i):
    r = {c: float("nan") for c in archive.COLUMNS}
    r.update(run_id=f"run{i}", method="standard", setting="greedy", status="ok", latency_ms_median=float(i))
    return r


@pytest.mark.parametrize("content, why", [
    (b"name,salary\nalice,100\n", "its header has none of the tool's columns"),
    (b"name,salary", "its header has none of the tool's columns"),
    ("run_id,caf\u00e9\nx,1\n".encode("latin-1"), "it is not UTF-8 text: byte 10"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "it is not UTF-8 text"),
    (b"run_id,name,salary\nx,alice,1\n", "mixes the tool's columns with others it never writes: name, salary"),
    (b"\nrun_id\n", "its first line is empty"),
])
def test_foreign_file_is_refused_before_and_during_a_run(tmp_path, content, why):
    path = tmp_path / "people.csv"
    path.write_bytes(content)
    message = archive.check_results_file(path)
    assert message.startswith(f"config key 'results': '{path}' exists and is not a decoding-bench results file (")
    assert why in message and message.endswith("; pick another .csv path") and "\n" not in message
    with pytest.raises(files.StoreError, match="it was left as it is") as err:
        archive.append_row(path, row(0))
    assert "\n" not in str(err.value)
    with pytest.raises(files.StoreError):
        archive.append_result(path, row(0), [{"text": "t"}])
    assert path.read_bytes() == content
    assert not archive.outputs_path(path).exists()


@pytest.mark.parametrize("content", [
    None, b"", "run_id,method,status\nold,standard,ok\n".encode(),
    ",".join(reversed(archive.COLUMNS)).encode() + b"\n",
    (",".join(archive.COLUMNS) + ",a_newer_column\n").encode(),
    "\ufeffrun_id,notes\nx,caf\u00e9\n".encode(),
    b"run_id,timestamp,sta",  # `head -c` cut the header of a file of ours
])
def test_our_files_old_new_and_missing_are_fine(tmp_path, content):
    path = tmp_path / "runs.csv"
    if content is not None:
        path.write_bytes(content)
    assert archive.check_results_file(path) is None
    archive.append_row(path, row(1))
    assert pd.read_csv(path)["run_id"].tolist()[-1] == "run1"


def test_folder_is_refused(tmp_path):
    assert "is a folder" in archive.check_results_file(tmp_path)


def test_upgrade_keeps_mode_and_symlink(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    real = data / "real.csv"
    real.write_text("run_id,method,status\nold,standard,ok\n")
    os.chmod(real, 0o640)
    link = tmp_path / "runs.csv"
    link.symlink_to(real)
    archive.append_row(link, row(1))
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert oct(real.stat().st_mode & 0o777) == oct(0o640)
    df = archive.load_rows(link)
    assert df["run_id"].tolist() == ["old", "run1"] and list(df.columns)[:3] == ["run_id", "method", "status"]
    assert set(df.columns) == set(archive.COLUMNS)
    assert (data / "real.csv.lock").exists()
    assert sorted(p.name for p in data.iterdir()) == ["real.csv", "real.csv.lock"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another owner")
def test_upgrade_keeps_owner(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("run_id,method,status\nold,standard,ok\n")
    os.chown(path, 12345, 23456)
    archive.append_row(path, row(1))
    st = path.stat()
    assert (st.st_uid, st.st_gid) == (12345, 23456)
    assert archive.load_rows(path)["run_id"].tolist() == ["old", "run1"]
