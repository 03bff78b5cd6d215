"""A torn last line (a crash or full disk mid-write, `head -c N runs.csv > t.csv`) is moved aside to a
sidecar with a one-line warning before the next append, never glued to the new row."""
import json

import pandas as pd

from store import archive, csv_records


def row(i, **extra):
    r = {c: float("nan") for c in archive.COLUMNS}
    r.update(run_id=f"run{i}", method="standard", setting="greedy", engine="hf", quantization="none",
             attention="sdpa", status="ok", latency_ms_median=10.0 + i,
             notes=f'row {i}: "quoted", commas,\na newline and UTF-8 – é ✓')
    r.update(extra)
    return r


def sidecars(folder, name):
    return sorted(p for p in folder.iterdir() if p.name.startswith(name + ".corrupt-"))


def test_csv_cut_at_every_byte_of_its_last_row(tmp_path, capsys):
    full = tmp_path / "full.csv"
    for i in range(3):
        archive.append_row(full, row(i))
    data = full.read_bytes()
    last_start, end = csv_records.record_bounds(data)
    assert end == len(data)
    path = tmp_path / "runs.csv"
    for cut in range(last_start, len(data) + 1):
        for p in sidecars(tmp_path, "runs.csv"):
            p.unlink()
        path.write_bytes(data[:cut])
        capsys.readouterr()
        archive.append_row(path, row(9))
        df = pd.read_csv(path)
        kept = ["run0", "run1"] + (["run2"] if cut == len(data) else [])
        assert df["run_id"].tolist() == kept + ["run9"], f"cut at byte {cut}"
        assert df["notes"].iloc[0] == row(0)["notes"]
        torn = sidecars(tmp_path, "runs.csv")
        err = capsys.readouterr().err
        if last_start < cut < len(data):
            assert len(torn) == 1 and torn[0].read_bytes() == data[last_start:cut], f"cut at byte {cut}"
            assert err.count("\n") == 1 and "torn" in err and str(torn[0]) in err
        else:
            assert not torn and not err


def test_csv_cut_anywhere_in_the_header_starts_a_fresh_file(tmp_path, capsys):
    full = tmp_path / "full.csv"
    archive.append_row(full, row(0))
    data = full.read_bytes()
    header_end = csv_records.first_record_end(data)
    path = tmp_path / "runs.csv"
    # Every byte near both ends of the header, a stride in between: the cases differ only at the ends.
    cuts = sorted(set(range(1, 40)) | set(range(40, header_end - 40, 11)) | set(range(header_end - 40, header_end)))
    for cut in cuts:
        path.write_bytes(data[:cut])
        assert archive.check_results_file(path) is None, f"cut at byte {cut}"
        archive.append_row(path, row(1))
        assert pd.read_csv(path)["run_id"].tolist() == ["run1"], f"cut at byte {cut}"
    assert "torn" in capsys.readouterr().err


def test_short_last_row_is_moved_aside_and_a_ragged_longer_one_kept(tmp_path, capsys):
    path = tmp_path / "runs.csv"
    archive.append_row(path, row(0))
    with open(path, "a") as f:
        f.write("run1,ts,ok\n")  # a complete line with fewer fields than the header
    archive.append_row(path, row(2))
    assert pd.read_csv(path)["run_id"].tolist() == ["run0", "run2"]
    assert sidecars(tmp_path, "runs.csv")[0].read_text() == "run1,ts,ok\n"
    assert capsys.readouterr().err.count("\n") == 1


def test_reader_ignores_a_torn_tail_it_has_not_repaired(tmp_path):
    path = tmp_path / "runs.csv"
    for i in range(2):
        archive.append_row(path, row(i))
    data = path.read_bytes()
    path.write_bytes(data[:-40])
    assert archive.load_rows(path)["run_id"].tolist() == ["run0"]


def outputs(i, n=2):
    return [{"run_id": f"run{i}", "method": "standard", "setting": "greedy", "engine": "hf", "quantization": "none",
             "attention": "sdpa", "prompt_index": k, "completion_index": 0, "sequence_index": 0,
             "text": f'text {k} of row {i}: "quoted"\nwith a newline – é ✓', "new_tokens": 5} for k in range(n)]


def test_outputs_cut_at_every_byte_of_their_last_line(tmp_path, capsys):
    csv_path = tmp_path / "runs.csv"
    for i in range(2):
        archive.append_result(csv_path, row(i), outputs(i))
    jsonl = archive.outputs_path(csv_path)
    data = jsonl.read_bytes()
    last_start = data.rfind(b"\n", 0, len(data) - 1) + 1
    for cut in range(last_start, len(data) + 1):
        for p in sidecars(tmp_path, "outputs.jsonl"):
            p.unlink()
        jsonl.write_bytes(data[:cut])
        capsys.readouterr()
        archive.append_outputs(csv_path, outputs(0, 1))
        lines = jsonl.read_text(encoding="utf-8").splitlines()
        parsed = [json.loads(line) for line in lines]  # every line parses
        complete = 4 if cut == len(data) else 3
        assert len(parsed) == complete + 1, f"cut at byte {cut}"
        assert [p["text"] for p in parsed[:3]] == [r["text"] for r in outputs(0) + outputs(1)[:1]]
        torn = sidecars(tmp_path, "outputs.jsonl")
        err = capsys.readouterr().err
        if last_start < cut < len(data):
            assert len(torn) == 1 and torn[0].read_bytes() == data[last_start:cut], f"cut at byte {cut}"
            assert err.count("\n") == 1 and "torn" in err
        else:
            assert not torn and not err
