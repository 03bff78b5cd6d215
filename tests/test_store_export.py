"""Exports open safely in a spreadsheet: cells that would run as formulas get a leading apostrophe."""
import csv
import io

import numpy as np
import pandas as pd

from store import archive, export

PAYLOADS = ['=HYPERLINK("http://x","y")', "=cmd|' /C calc'!A0", "@SUM(1,1)", "+1+1", "-2+3", "\t=1", "\r=1"]


def test_formula_payloads_are_escaped_and_numbers_kept(tmp_path):
    df = pd.DataFrame({
        "notes": PAYLOADS + ["plain", "-1.5", "+3", np.nan],
        "latency_ms_median": [-1.5] * 7 + [2.0, 3.0, -4.0, np.nan],
        "mixed": [-1.5, "=1", True, None, "a", "-", "1e5", "-inf", 3, "x", "@"],
    })
    safe = export.spreadsheet_safe(df)
    assert safe["notes"].tolist()[:7] == ["'" + p for p in PAYLOADS]
    assert safe["notes"].tolist()[7:10] == ["plain", "-1.5", "+3"] and pd.isna(safe["notes"].iloc[10])
    assert safe["latency_ms_median"].dtype == df["latency_ms_median"].dtype
    assert safe["latency_ms_median"].iloc[0] == -1.5
    assert safe["mixed"].tolist()[:3] == [-1.5, "'=1", True]
    assert safe["mixed"].tolist()[5:8] == ["'-", "1e5", "-inf"]
    assert df["notes"].iloc[0] == PAYLOADS[0]  # the original is untouched

    path = export.export_csv(df, tmp_path / "export.csv")
    with open(path, newline="") as f:  # read as a spreadsheet does: every cell, quoted or not
        cells = [cell for record in csv.reader(f) for cell in record]
    assert len(cells) == 3 * 12  # "\r=1" stayed inside its cell instead of starting a new row
    assert all(not c.startswith(export.FORMULA_STARTS) or export.is_number(c) for c in cells)
    back = pd.read_csv(path)
    assert back["latency_ms_median"].iloc[0] == -1.5 and back["notes"].iloc[6] == "'\r=1"


def test_column_names_are_escaped_too():
    safe = export.spreadsheet_safe(pd.DataFrame({"=evil()": ["a"], "ok": [1]}))
    assert list(safe.columns) == ["'=evil()", "ok"]


def test_export_of_real_rows(tmp_path):
    path = tmp_path / "runs.csv"
    row = {c: float("nan") for c in archive.COLUMNS}
    row.update(run_id="r", method="standard", status="error", error="=1+1 failed", latency_ms_median=-2.0)
    archive.append_row(path, row)
    out = io.StringIO()
    export.spreadsheet_safe(archive.load_rows(path)).to_csv(out, index=False)
    assert ",'=1+1 failed," in out.getvalue() and ",-2," in out.getvalue()
