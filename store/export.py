"""Downloads of rows as a CSV that is safe to open in a spreadsheet: a cell a spreadsheet would run as a
formula is escaped (OWASP CSV injection), and line ends are CRLF so a lone "\\r" stays inside its cell."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported where frames are made
    import pandas as pd

# OWASP CSV injection: a spreadsheet runs a cell starting with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def spreadsheet_cell(value):
    """A string a spreadsheet would run as a formula gets a leading apostrophe (OWASP); numbers,
    and strings that are plain numbers such as "-1.5", stay as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not is_number(value):
        return "'" + value
    return value


def spreadsheet_safe(df: "pd.DataFrame") -> "pd.DataFrame":
    """A copy of df safe to open in Excel, LibreOffice or Google Sheets: column names included."""
    import pandas as pd

    out = df.copy()
    for column in out.columns:
        if pd.api.types.is_object_dtype(out[column]) or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(spreadsheet_cell)
    out.columns = [spreadsheet_cell(c) for c in out.columns]
    return out


def export_csv(df: "pd.DataFrame", path: str | Path) -> Path:
    """Write df as a CSV for downloads: spreadsheet-safe, no index. Use this, not
    spreadsheet_safe(df).to_csv(...), whose "\n" line ends leave a cell with "\r" unquoted."""
    # CRLF (RFC 4180) makes pandas quote a cell holding a lone "\r"; unquoted, a spreadsheet would
    # start a new row there, and the text after it would be a cell of its own, unescaped.
    spreadsheet_safe(df).to_csv(path, index=False, lineterminator="\r\n")
    return Path(path)
