"""A full disk: each row is written whole or not at all, and the error is one line naming the file."""
import errno
import os
import subprocess
import uuid

import pandas as pd
import pytest

from store import archive, files


def row(i, notes=""):
    r = {c: float("nan") for c in archive.COLUMNS}
    r.update(run_id=f"run{i}", method="standard", setting="greedy", engine="hf", quantization="none",
             attention="sdpa", status="ok", latency_ms_median=float(i), notes=notes)
    return r


def texts(i):
    return [{"run_id": f"run{i}", "method": "standard", "text": "x" * 100, "new_tokens": 3}]


def no_space(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def half_then_no_space(real_write):
    """The first write stores half its bytes, as a nearly full disk does; the next one fails."""
    def write(fd, data):
        if len(data) > 1 and not getattr(write, "done", False):
            write.done = True
            return real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return write


def expected_message(path):
    return f"cannot write results to {path}: No space left on device; the rows before this one are kept"


@pytest.mark.parametrize("failure", ["at once", "after half"])
def test_injected_enospc_keeps_the_file_as_it_was(tmp_path, monkeypatch, failure):
    path = tmp_path / "runs.csv"
    archive.append_result(path, row(0), texts(0))
    csv_before, jsonl_before = path.read_bytes(), archive.outputs_path(path).read_bytes()
    monkeypatch.setattr(os, "write", no_space if failure == "at once" else half_then_no_space(os.write))
    with pytest.raises(files.StoreError) as err:
        archive.append_row(path, row(1))
    assert str(err.value) == expected_message(path)
    assert path.read_bytes() == csv_before and archive.outputs_path(path).read_bytes() == jsonl_before
    monkeypatch.undo()
    archive.append_row(path, row(2))
    assert pd.read_csv(path)["run_id"].tolist() == ["run0", "run2"]


def test_injected_enospc_on_a_new_file_leaves_it_empty(tmp_path, monkeypatch):
    path = tmp_path / "runs.csv"
    monkeypatch.setattr(os, "write", half_then_no_space(os.write))
    with pytest.raises(files.StoreError):
        archive.append_row(path, row(0))
    assert path.read_bytes() == b""
    monkeypatch.undo()
    archive.append_row(path, row(1))
    assert pd.read_csv(path)["run_id"].tolist() == ["run1"]


def test_injected_failure_of_the_row_takes_its_texts_back(tmp_path, monkeypatch):
    path = tmp_path / "runs.csv"
    archive.append_result(path, row(0), texts(0))
    csv_before, jsonl_before = path.read_bytes(), archive.outputs_path(path).read_bytes()
    real_write = os.write

    def write(fd, data):  # texts go through, the row hits the full disk
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".csv"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(files.StoreError, match="No space left on device"):
        archive.append_result(path, row(1), texts(1))
    assert path.read_bytes() == csv_before
    assert archive.outputs_path(path).read_bytes() == jsonl_before


def test_injected_failure_of_fsync_is_cut_back_too(tmp_path, monkeypatch):
    path = tmp_path / "runs.csv"
    archive.append_row(path, row(0))
    before = path.read_bytes()

    def fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(files.StoreError, match="Input/output error; the rows before this one are kept"):
        archive.append_row(path, row(1))
    monkeypatch.undo()
    assert path.read_bytes() == before


def test_injected_enospc_during_a_header_upgrade_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "runs.csv"
    path.write_text("run_id,method,status\nold,standard,ok\n")
    monkeypatch.setattr(os, "write", no_space)
    with pytest.raises(files.StoreError, match="No space left on device"):
        archive.append_row(path, row(1))
    monkeypatch.undo()
    assert path.read_text() == "run_id,method,status\nold,standard,ok\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv", "runs.csv.lock"]


@pytest.fixture
def small_tmpfs(tmp_path):
    folder = tmp_path / f"full-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                              capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True, timeout=20)


def test_real_full_disk_keeps_every_row_before(small_tmpfs):
    path = small_tmpfs / "runs.csv"
    written = 0
    with pytest.raises(files.StoreError) as err:
        for i in range(1000):
            archive.append_result(path, row(i, notes="n" * 3000), texts(i))
            written += 1
    assert str(err.value).count("\n") == 0 and "No space left on device" in str(err.value)
    assert written > 3
    df = pd.read_csv(path)
    assert df["run_id"].tolist() == [f"run{i}" for i in range(written)]
    assert [r["run_id"] for r in archive.load_outputs(path)] == [f"run{i}" for i in range(written)]
