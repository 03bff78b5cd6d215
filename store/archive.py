"""Results on disk: runs.csv (one row per method x setting, append-only) and outputs.jsonl (every text).

What the store promises (README, "What the store promises"):

- A row is one os.write of one complete line followed by fsync. If the write or the fsync fails (a
  full disk), the file is cut back to its size before the row and StoreError says so in one line.
- Writers hold an advisory lock (flock on `<csv>.lock`, beside the CSV's real file) for the whole
  of an append, the repair of a torn tail and a header upgrade, so parallel processes never write
  the header twice or lose rows.
- A torn last line (a crash or full disk mid-write, a copy cut short) is moved to a
  `<file>.corrupt-<timestamp>` sidecar before the next append, with a one-line warning: never glued.
- A file that is not ours (foreign header, not UTF-8) is refused, never rewritten.
- append_result writes a row's texts first and its CSV row second, so a kill between the two leaves
  texts without a row (ignored by load_outputs), never a row without its texts.
"""
from __future__ import annotations

import codecs
import csv
import fcntl
import io
import json
import math
import os
import sys
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported where frames are made: the CLI's store writes need none
    import pandas as pd

from metrics.rows import COLUMNS

ROW_KEY_FIELDS = ("run_id", "method", "setting", "engine", "quantization", "attention")
# OWASP CSV injection: a spreadsheet runs a cell starting with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CHECK_BYTES = 1 << 20  # the header and a first stretch are enough to tell a foreign file


class StoreError(Exception):
    """The results cannot be written; the message is one line naming the file and what was kept."""


def outputs_path(csv_path: str | Path) -> Path:
    return Path(csv_path).with_name("outputs.jsonl")


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


def row_key(row: dict) -> str:
    """What ties a text in outputs.jsonl to its CSV row; built from the same strings the CSV holds."""
    return "|".join(format_value(row.get(k)) for k in ROW_KEY_FIELDS)


def reason(error: OSError) -> str:
    return error.strerror or " ".join(str(error).split()) or type(error).__name__


def write_failed(path, error: OSError) -> StoreError:
    return StoreError(f"cannot write results to {path}: {reason(error)}; the rows before this one are kept")


# --- locking -----------------------------------------------------------------------------------------


def real_path(path: str | Path) -> Path:
    # Every writer resolves symlinks, so a link and its target share one lock, and a rewrite replaces
    # the target, never the link.
    return Path(os.path.realpath(path))


def lock_path(csv_path: str | Path) -> Path:
    real = real_path(csv_path)
    return real.with_name(real.name + ".lock")


@contextmanager
def locked(csv_path: str | Path):
    """Hold the CSV's advisory lock; yields its real path. Not re-entrant: one per call chain.

    The lock lives in its own file, never in the CSV, because a header upgrade replaces the CSV's
    inode and a lock on the old inode would no longer exclude anyone. It is never deleted: removing a
    lock file races with a writer that has just opened it.
    """
    real = real_path(csv_path)
    lock = lock_path(csv_path)
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as e:
        raise StoreError(f"cannot write results to {csv_path}: cannot open its lock file {lock} ({reason(e)}); "
                         "the rows before this one are kept") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by close, or by the kernel when the process dies
        yield real
    finally:
        os.close(fd)


# --- whole writes --------------------------------------------------------------------------------------


def append_whole(path: Path, text: str | bytes, shown=None) -> int:
    """Append with a single write and fsync, or not at all; returns the size before. Caller holds the lock.

    A killed process cannot leave half of one write. A failed write or fsync (ENOSPC, EIO, a quota) is
    cut back to the previous size, so the file never keeps a partial row for the next append to glue.
    """
    data = text.encode() if isinstance(text, str) else text
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise write_failed(shown or path, e) from None
    try:
        before = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            while written < len(data):  # a short write (exotic filesystems, a nearly full disk)
                written += os.write(fd, data[written:])
            os.fsync(fd)
        except OSError as e:
            truncate_fd(fd, before)
            raise write_failed(shown or path, e) from None
        return before
    finally:
        os.close(fd)


def truncate_fd(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError:
        pass  # cutting back rarely fails; if it does, the next append moves the torn tail aside


def truncate_path(path: Path, size: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        truncate_fd(fd, size)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


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


def jsonl_good_size(data: bytes) -> int:
    """The size of data without a torn last line: one without its newline, or not valid JSON."""
    if not data:
        return 0
    if not data.endswith(b"\n"):
        return data.rfind(b"\n") + 1
    start = data.rfind(b"\n", 0, len(data) - 1) + 1
    line = data[start:-1]
    if not line.strip():
        return len(data)
    try:
        json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return start
    return len(data)


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
    end = first_record_end(data)
    names = parse_record(data if end is None else data[:end])
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


def check_results_file(path: str | Path) -> str | None:
    """A one-line message when `path` exists and is not a results file of this tool, else None.

    Call it with the config check, before any model loads. Missing and empty files are fine.
    """
    p = Path(path)
    if p.is_dir():
        return f"config key 'results': '{path}' is a folder; pick a .csv file path"
    try:
        with open(p, "rb") as f:
            data = f.read(CHECK_BYTES)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"config key 'results': cannot read '{path}' ({reason(e)}); pick a readable .csv path"
    why = foreign_reason(data)
    if why is None:
        return None
    return f"config key 'results': '{path}' exists and is not a decoding-bench results file ({why}); pick another .csv path"


# --- repairs under the lock -----------------------------------------------------------------------------


def warn(message: str) -> None:
    print(f"decoding-bench: warning: {message}", file=sys.stderr, flush=True)


def move_torn_tail(path: Path, data: bytes, good: int, shown) -> None:
    """Keep the torn bytes in a sidecar (fsynced first, so nothing is lost), then cut them off."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        sidecar = path.with_name(f"{path.name}.corrupt-{stamp}" + (f"-{n}" if n else ""))
        try:
            fd = os.open(sidecar, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            break
        except FileExistsError:
            continue
        except OSError as e:
            raise write_failed(shown, e) from None
    else:
        raise StoreError(f"cannot write results to {shown}: too many {path.name}.corrupt-{stamp} files; "
                         "the rows before this one are kept")
    try:
        tail = data[good:]
        written = os.write(fd, tail)
        while written < len(tail):
            written += os.write(fd, tail[written:])
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        sidecar.unlink(missing_ok=True)
        raise write_failed(shown, e) from None
    os.close(fd)
    truncate_path(path, good)
    warn(f"{shown}: its last line was torn ({len(data) - good} bytes without a complete record, "
         f"from a crash or a full disk mid-write); moved to {sidecar}")


def refuse_foreign(data: bytes, shown) -> None:
    if (why := foreign_reason(data)) is not None:
        raise StoreError(f"cannot write results to {shown}: it is not a decoding-bench results file ({why}); "
                         "it was left as it is; pick another .csv path")


def prepare_csv(real: Path, shown) -> list[str] | None:
    """Under the lock: refuse a foreign file, move a torn tail aside, add missing columns.
    Returns the header rows are written under, or None when the file is new or empty."""
    try:
        data = read_bytes(real)
    except OSError as e:
        raise write_failed(shown, e) from None
    if not data:
        return None
    refuse_foreign(data, shown)
    good = csv_good_size(data)
    if good < len(data):
        move_torn_tail(real, data, good, shown)
        data = data[:good]
    if not data:
        return None
    header = parse_record(data[:first_record_end(data)])
    if header != COLUMNS and set(COLUMNS) - set(header):
        header = upgrade_header(real, header, data, shown)
    return header


def prepare_jsonl(path: Path, shown=None) -> None:
    """Under the lock: move a torn last line of outputs.jsonl aside."""
    try:
        data = read_bytes(path)
    except OSError as e:
        raise write_failed(shown or path, e) from None
    good = jsonl_good_size(data)
    if good < len(data):
        move_torn_tail(path, data, good, shown or path)


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
        raise write_failed(shown or path, e) from None
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
        raise write_failed(shown or path, e) from None
    fsync_dir(path.parent)
    return columns


# --- writing -----------------------------------------------------------------------------------------


def header_line() -> str:
    return encode_line(COLUMNS, {c: c for c in COLUMNS})


def append_row(path: str | Path, row: dict) -> None:
    """Append one row (a header first into a new file); raises StoreError, one line, on failure."""
    with locked(path) as real:
        header = prepare_csv(real, path)
        append_whole(real, (header_line() if header is None else "") + encode_line(header or COLUMNS, row), path)


def keyed(records: list[dict], key: str | None = None) -> list[dict]:
    """Records with their row_key: the row's, or built from each record's own copy of the row's fields
    (a record without them gets none, and readers always keep it)."""
    if key is not None:
        return [{**r, "row_key": key} for r in records]
    return [{**r, "row_key": row_key(r)} if all(k in r for k in ROW_KEY_FIELDS) else r for r in records]


def encode_records(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def append_outputs(csv_path: str | Path, records: list[dict]) -> None:
    """Texts alone, for a row already written; append_result writes both together."""
    if records:
        with locked(csv_path):
            path = outputs_path(csv_path)
            prepare_jsonl(path)
            append_whole(path, encode_records(keyed(records)))


def append_result(csv_path: str | Path, row: dict, outputs: list[dict]) -> None:
    """A row and its texts, under one lock: texts first, then the row.

    A kill between the two leaves texts without a row, which load_outputs ignores; never a row
    without its texts. If the row cannot be written, the texts just written are cut off again.
    Raises StoreError (one line) when either file cannot be written or the CSV is foreign.
    """
    with locked(csv_path) as real:
        header = prepare_csv(real, csv_path)  # first: a foreign CSV gets no texts beside it either
        out = outputs_path(csv_path)
        before = None
        if outputs:
            prepare_jsonl(out)
            before = append_whole(out, encode_records(keyed(outputs, row_key(row))))
        try:
            append_whole(real, (header_line() if header is None else "") + encode_line(header or COLUMNS, row), csv_path)
        except StoreError:
            if before is not None:
                truncate_path(out, before)
            raise


# --- reading -----------------------------------------------------------------------------------------


def complete_csv(path: str | Path) -> bytes:
    """The file without a torn last record, so a reader never sees half a row."""
    data = read_bytes(Path(path))
    return data[:csv_good_size(data)]


def load_rows(paths) -> "pd.DataFrame":
    """Rows from one or more CSVs (other machines' included), merged by column name."""
    import pandas as pd

    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames = []
    for p in paths:
        data = complete_csv(p)
        if data.strip():
            frames.append(pd.read_csv(io.BytesIO(data)))
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    df = pd.concat(frames, ignore_index=True)
    missing = [c for c in COLUMNS if c not in df.columns]  # an older CSV: its newer columns are empty
    if missing:
        df = pd.concat([df, pd.DataFrame(pd.NA, index=df.index, columns=missing)], axis=1)
    return df


def row_keys(csv_path: str | Path) -> set[str]:
    data = complete_csv(csv_path)
    if not data:
        return set()
    text = data.decode("utf-8", errors="replace").lstrip("\ufeff")
    return {"|".join(r.get(k) or "" for k in ROW_KEY_FIELDS) for r in csv.DictReader(io.StringIO(text, newline=""))}


def load_outputs(csv_path: str | Path, orphans: bool = False) -> list[dict]:
    """Every text in outputs.jsonl whose CSV row exists.

    Texts are written before their row, so a run killed between the two leaves texts whose row_key
    matches no row: they are dropped here (orphans=True keeps them). Records from before row_key
    existed are always kept.
    """
    path = outputs_path(csv_path)
    if not path.exists():
        return []
    records = []
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn line not yet moved aside by the next append
        if isinstance(record, dict):
            records.append(record)
    if orphans or not any("row_key" in r for r in records):
        return records
    keys = row_keys(csv_path)
    return [r for r in records if "row_key" not in r or r["row_key"] in keys]


# --- exports -------------------------------------------------------------------------------------------


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
