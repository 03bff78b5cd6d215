"""runs.csv's records: encoding a row, finding where complete records end, telling a results file of this tool
from a foreign one, and upgrading an older header. The lock and the whole writes are files.py's.

- A torn last record (no newline, still inside quotes, fewer fields than the header) is moved aside before
  the next append.
- A file that is not ours (foreign header, not UTF-8) is refused, never rewritten.
- An older file gains the newer columns by an atomic rewrite under the lock.
"""
from __future__ import annotations

import codecs
import csv
import io
import math
import os
import tempfile
from pathlib import Path

from metrics.rows import COLUMNS
from store import files

CHECK_BYTES = 1 << 20  # the header and a first stretch are enough to tell a foreign file
# Our header is a few KiB; a first line past this is no header of ours, and past 128 KiB the csv module refuses it.
MAX_HEADER_BYTES = 64 << 10


def format_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def encode_line(columns: list[str], row: dict) -> str:
    buffer = io.StringIO()
    # The csv module quotes only the characters of its line terminator: with "\r\n" a field holding a
    # lone "\r" is quoted too, which pandas and spreadsheets would otherwise read as a line break.
    csv.writer(buffer, lineterminator="\r\n").writerow([format_value(row.get(c)) for c in columns])
    return buffer.getvalue()[:-2] + "\n"


def header_line() -> str:
    return encode_line(COLUMNS, {c: c for c in COLUMNS})


def row_text(header: list[str] | None, row: dict) -> str:
    """What one append writes: the header first into a new file (header None), then the row under the
    file's own header, whose column order may be an older version's."""
    return (header_line() if header is None else "") + encode_line(header or COLUMNS, row)


# --- reading the CSV's structure ------------------------------------------------------------------------


def record_bounds(data: bytes) -> tuple[int, int]:
    """(start, end) of the last complete CSV record: it ends at a newline outside quotes.

    Works on bytes: '"' and '\\n' never occur inside a UTF-8 multi-byte character, and a doubled quote
    inside a quoted field counts twice, so the parity of quotes seen so far says whether a newline
    ends a record or sits inside a field.
    """
    start = end = pos = quotes = 0
    while (nl := data.find(b"\n", pos)) >= 0:
        quotes += data.count(b'"', pos, nl)
        pos = nl + 1
        if quotes % 2 == 0:
            start, end = end, pos
    return start, end


def first_record_end(data: bytes) -> int | None:
    pos = quotes = 0
    while (nl := data.find(b"\n", pos)) >= 0:
        quotes += data.count(b'"', pos, nl)
        pos = nl + 1
        if quotes % 2 == 0:
            return pos
    return None


def parse_record(raw: bytes) -> list[str]:
    text = raw.decode("utf-8", errors="replace").lstrip("\ufeff")
    return next(csv.reader(io.StringIO(text, newline="")), [])


def csv_good_size(data: bytes) -> int:
    """The size of data without a torn last record: one without its newline, still inside quotes, or
    with fewer fields than the header (more is a ragged row of an older file, complete, and kept)."""
    start, end = record_bounds(data)
    if end == 0:
        return 0  # not even the header is complete
    if end < len(data):
        return end
    if start == 0:
        return end  # the header is the last record
    last = data[start:end]
    if not last.strip():
        return end  # a blank line harms nobody
    header = parse_record(data[:first_record_end(data)])
    return end if len(parse_record(last)) >= len(header) else start


def foreign_reason(data: bytes) -> str | None:
    """Why these bytes are not a results file of this tool, or None when they are (or are empty).

    Ours: UTF-8, and a header that is a subset (an older version wrote fewer columns) or a superset (a
    newer one wrote more) of COLUMNS, in any order. A header cut off mid-way (`head -c` of a file of
    ours) is judged on its complete names, its last name only having to start one of ours.
    """
    if not data:
        return None
    try:
        # Not final: a multi-byte character cut by a torn write or by the read limit is not foreign.
        codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
    except UnicodeDecodeError as e:
        return f"it is not UTF-8 text: byte {e.start} is {data[e.start:e.start + 1]!r}"
    end = first_record_end(data[:MAX_HEADER_BYTES + 1])
    if end is None and len(data) > MAX_HEADER_BYTES:
        return f"its first line runs past {MAX_HEADER_BYTES >> 10} KiB, longer than any header this tool writes"
    try:
        names = parse_record(data if end is None else data[:end])
    except csv.Error as e:
        return f"its first line is no CSV header ({e})"
    if end is None and names:
        *names, cut = names
        if not any(c.startswith(cut) for c in COLUMNS):
            names.append(cut)
        elif not names:
            return None  # only the start of our first column name survived
    if not names or names == [""]:
        return "its first line is empty, where the header belongs"
    ours = set(COLUMNS)
    if not ours & set(names):
        return "its header has none of the tool's columns"
    unknown = [n for n in names if n not in ours]
    if unknown and ours - set(names):
        more = ", ..." if len(unknown) > 4 else ""
        return f"its header mixes the tool's columns with others it never writes: {', '.join(unknown[:4])}{more}"
    return None


# --- repairs under the lock -----------------------------------------------------------------------------


def refuse_foreign(data: bytes, shown) -> None:
    if (why := foreign_reason(data)) is not None:
        raise files.StoreError(f"cannot write results to {shown}: it is not a decoding-bench results file ({why}); "
                         "it was left as it is; pick another .csv path")


def prepare_csv(real: Path, shown) -> list[str] | None:
    """Under the lock: refuse a foreign file, move a torn tail aside, add missing columns.
    Returns the header rows are written under, or None when the file is new or empty."""
    try:
        data = files.read_bytes(real)
    except OSError as e:
        raise files.write_failed(shown, e) from None
    if not data:
        return None
    refuse_foreign(data, shown)
    good = csv_good_size(data)
    if good < len(data):
        files.move_torn_tail(real, data, good, shown)
        data = data[:good]
    if not data:
        return None
    header = parse_record(data[:first_record_end(data)])
    if header != COLUMNS and set(COLUMNS) - set(header):
        header = upgrade_header(real, header, data, shown)
    return header


def upgrade_header(path: Path, header: list[str], data: bytes, shown=None) -> list[str]:
    """An older file gains the newer columns (empty in its old rows), rewritten atomically.

    Caller holds the lock and passes the file's (repaired) bytes. The rewrite goes to a uniquely named
    temporary file beside the real file, takes over its mode and owner, and replaces it by rename: a
    reader sees the old file or the new one, and a symlink to it stays a symlink.
    """
    columns = header + [c for c in COLUMNS if c not in header]
    text = data.decode("utf-8").lstrip("\ufeff")
    # A ragged old row puts its extra fields under None: dropped, never a crash mid-run.
    old_rows = [{k: v for k, v in r.items() if k is not None} for r in csv.DictReader(io.StringIO(text, newline=""))]
    body = "".join([encode_line(columns, {c: c for c in columns})] + [encode_line(columns, r) for r in old_rows]).encode()
    try:
        st = os.stat(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    except OSError as e:
        raise files.write_failed(shown or path, e) from None
    try:
        try:
            os.fchmod(fd, st.st_mode & 0o7777)
            try:
                os.fchown(fd, st.st_uid, st.st_gid)
            except PermissionError:
                pass  # only root may give a file away; the mode is still kept
            written = os.write(fd, body)
            while written < len(body):
                written += os.write(fd, body[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise files.write_failed(shown or path, e) from None
    files.fsync_dir(path.parent)
    return columns
