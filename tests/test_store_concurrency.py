"""Parallel writers, as processes: every row arrives exactly once, under exactly one header.

Without the lock two writers on a new file both saw no header and both wrote one (177 of 200 trials),
and two writers upgrading an older header both rewrote through the same .csv.tmp name.
"""
import csv
import multiprocessing
import time

import pandas as pd
import pytest

from store import archive

WRITERS, ROWS, TRIALS = 4, 5, 100
OLD_HEADER = "run_id,method,status,latency_ms_median\nold,standard,ok,1.0\n"


def row(writer, i):
    r = {c: float("nan") for c in archive.COLUMNS}
    r.update(run_id=f"w{writer}-{i}", method="standard", setting="greedy", status="ok",
             notes=f'writer {writer}, "row" {i}\nsecond line', latency_ms_median=float(i))
    return r


def write_rows(path, writer, barrier):
    barrier.wait()
    for i in range(ROWS):
        archive.append_row(path, row(writer, i))


def records(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method")
def test_parallel_writers_every_row_once_one_header(tmp_path):
    ctx = multiprocessing.get_context("fork")  # fork: a new process in milliseconds, no re-import
    started = time.perf_counter()
    for trial in range(TRIALS):
        path = tmp_path / f"t{trial}" / "runs.csv"
        upgrade = trial % 2 == 1  # every other trial races on upgrading an older, shorter header
        if upgrade:
            path.parent.mkdir()
            path.write_text(OLD_HEADER)
        barrier = ctx.Barrier(WRITERS)
        procs = [ctx.Process(target=write_rows, args=(path, w, barrier)) for w in range(WRITERS)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * WRITERS, f"trial {trial}: a writer failed"
        recs = records(path)
        header = recs[0]
        assert set(header) >= set(archive.COLUMNS)
        assert sum(r == header for r in recs) == 1, f"trial {trial}: header written more than once"
        run_ids = [r[header.index("run_id")] for r in recs[1:]]
        expected = [f"w{w}-{i}" for w in range(WRITERS) for i in range(ROWS)] + (["old"] if upgrade else [])
        assert sorted(run_ids) == sorted(expected), f"trial {trial}: rows lost or duplicated"
        df = pd.read_csv(path)
        assert len(df) == len(expected) and list(df.columns) == header
        leftovers = [p.name for p in path.parent.iterdir() if p.name not in ("runs.csv", "runs.csv.lock")]
        assert not leftovers, f"trial {trial}: temporary files left behind: {leftovers}"
    elapsed = time.perf_counter() - started
    print(f"{TRIALS} trials x {WRITERS} writers x {ROWS} rows: {elapsed:.1f} s")
