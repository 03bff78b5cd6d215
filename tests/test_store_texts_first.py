"""A row and its texts belong together: texts are written first, then the row, under one lock, so a
kill between the two leaves texts without a row (which readers ignore), never a row without texts."""
import collections
import fcntl
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from store import archive, csv_records, files
from conftest import ROOT


def row(i):
    r = {c: float("nan") for c in archive.COLUMNS}
    r.update(run_id="run-x", method="standard", setting=f"point={i}", engine="hf", quantization="none",
             attention="sdpa", status="ok", latency_ms_median=float(i))
    return r


def texts(i, n=3):
    return [{"run_id": "run-x", "method": "standard", "setting": f"point={i}", "engine": "hf",
             "quantization": "none", "attention": "sdpa", "prompt_index": k, "text": f"text {k} of {i}"}
            for k in range(n)]


def assert_rows_have_texts(csv_path, n=3):
    data = csv_path.read_bytes()
    assert csv_records.record_bounds(data)[1] == len(data), "torn CSV row"
    keys = [archive.row_key(r) for r in pd.read_csv(csv_path, keep_default_na=False, dtype=str).to_dict("records")]
    counts = collections.Counter(r["row_key"] for r in archive.load_outputs(csv_path, orphans=True))
    missing = [k for k in keys if counts[k] != n]
    assert not missing, f"rows without (all) their texts: {missing}"
    return keys, counts


def lock_is_free(csv_path):
    fd = os.open(files.lock_path(csv_path), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from store import archive, files

    csv_path, marker = sys.argv[1], Path(sys.argv[2])
    real_append = files.append_whole

    def append_then_hang(path, text, shown=None):
        before = real_append(path, text, shown)
        if Path(path).name == "outputs.jsonl":  # the texts are on disk, the row is not
            marker.touch()
            time.sleep(120)
        return before

    files.append_whole = append_then_hang
    row = {"run_id": "run-x", "method": "standard", "setting": "point=1", "engine": "hf",
           "quantization": "none", "attention": "sdpa", "status": "ok"}
    archive.append_result(csv_path, row, [dict(text=f"text {k} of 1", prompt_index=k) for k in range(3)])
""")


def test_kill_between_texts_and_row_leaves_no_row_without_texts(tmp_path):
    csv_path, marker = tmp_path / "runs.csv", tmp_path / "texts-written"
    archive.append_result(csv_path, row(0), texts(0))
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(csv_path), str(marker)], cwd=ROOT, env=env,
                             stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not marker.exists():
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "child never wrote its texts"
        time.sleep(0.02)
    assert not lock_is_free(csv_path)  # the child holds the lock between its two writes
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stderr.close()

    assert pd.read_csv(csv_path)["setting"].tolist() == ["point=0"]
    assert [r["text"] for r in archive.load_outputs(csv_path)] == [f"text {k} of 0" for k in range(3)]
    assert len(archive.load_outputs(csv_path, orphans=True)) == 6  # the orphans stay on disk, unread
    assert lock_is_free(csv_path)  # the kernel released the dead writer's lock
    archive.append_result(csv_path, row(2), texts(2))
    keys, _ = assert_rows_have_texts(csv_path)
    assert len(keys) == 2
    assert [r["setting"] for r in archive.load_outputs(csv_path)] == ["point=0"] * 3 + ["point=2"] * 3


def write_forever(csv_path, start):
    for i in range(start, start + 100000):
        archive.append_result(csv_path, row(i), texts(i))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method")
def test_kills_at_random_moments_never_leave_a_row_without_texts(tmp_path):
    ctx = multiprocessing.get_context("fork")
    csv_path = tmp_path / "runs.csv"
    rng = random.Random(0)
    for attempt in range(20):
        child = ctx.Process(target=write_forever, args=(csv_path, attempt * 100000))
        child.start()
        time.sleep(rng.uniform(0.02, 0.15))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert_rows_have_texts(csv_path)
    keys, counts = assert_rows_have_texts(csv_path)
    assert len(keys) > 20
    assert set(r["row_key"] for r in archive.load_outputs(csv_path)) == set(keys)


def test_records_without_row_key_are_kept(tmp_path):
    csv_path = tmp_path / "runs.csv"
    archive.append_row(csv_path, row(0))
    archive.outputs_path(csv_path).write_text('{"run_id": "old", "text": "from an older version"}\n')
    archive.append_result(csv_path, row(1), texts(1))
    assert [r["text"] for r in archive.load_outputs(csv_path)][0] == "from an older version"
    assert len(archive.load_outputs(csv_path)) == 4
