"""The low-level safety of every file the store writes: the advisory lock, whole appends that are cut back when
they fail, fsync, and moving a torn last line aside instead of gluing the next write to it.

- A write is one os.write of complete lines followed by fsync. If the write or the fsync fails (a full disk),
  the file is cut back to its size before it and StoreError says so in one line.
- Writers hold an advisory lock (flock on `<csv>.lock`, beside the CSV's real file) for the whole of an
  append and of any repair, so parallel processes never interleave.
- A torn last line is moved to a `<file>.corrupt-<timestamp>` sidecar before the next append, with a one-line
  warning: never glued.
"""
from __future__ import annotations

import fcntl
import json
import os
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path


class StoreError(Exception):
    """The results cannot be written; the message is one line naming the file and what was kept."""


def reason(error: OSError) -> str:
    return error.strerror or " ".join(str(error).split()) or type(error).__name__


def write_failed(path, error: OSError) -> StoreError:
    return StoreError(f"cannot write results to {path}: {reason(error)}; the rows before this one are kept")


def warn(message: str) -> None:
    print(f"decoding-bench: warning: {message}", file=sys.stderr, flush=True)


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



# --- torn tails ----------------------------------------------------------------------------------------


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


def prepare_jsonl(path: Path, shown=None) -> None:
    """Under the lock: move a torn last line of outputs.jsonl aside."""
    try:
        data = read_bytes(path)
    except OSError as e:
        raise write_failed(shown or path, e) from None
    good = jsonl_good_size(data)
    if good < len(data):
        move_torn_tail(path, data, good, shown or path)
