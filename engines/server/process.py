"""A server started from a command line (`server_command`): its process group, its log, its readiness, its stop;
and the URLs of an endpoint."""
from __future__ import annotations

import atexit
import os
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

READY_POLL_S = 0.25
STOP_GRACE_S = 20


class ServerFailed(RuntimeError):
    """The server could not be started or stopped serving; the message ends with the tail of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def urls(endpoint: str) -> dict[str, str]:
    base = endpoint.rstrip("/")
    root = base[:-3] if base.endswith("/v1") else base
    return {"base": base, "root": root, "health": root + "/health", "models": base + "/models",
            "metrics": root + "/metrics", "completions": base + "/completions", "chat": base + "/chat/completions"}


class ServerProcess:
    """One server started from a command line, in its own process group so that stopping it stops its children."""

    def __init__(self, command: str, log_path: Path):
        self.command, self.log_path = command, log_path
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self, endpoint: str, timeout_s: float) -> None:
        import httpx

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(shlex.split(self.command), stdout=self._log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            raise ServerFailed(f"server command could not start ({e.strerror or e}): {self.command}") from None
        atexit.register(self.stop)
        u = urls(endpoint)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(f"server exited with code {self.proc.returncode} before it was ready: {self.tail()}")
            for url in (u["health"], u["models"]):
                try:
                    if httpx.get(url, timeout=2).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(READY_POLL_S)
        self.stop()
        raise ServerFailed(f"server not ready at {u['health']} or {u['models']} after {timeout_s:g} s: {self.tail()}")

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 10)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if proc is not None:
            try:  # children that outlived the leader (workers of a multi-process server) share its group
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 15, chars: int = 1200) -> str:
        try:
            text = self.log_path.read_bytes().decode("utf-8", errors="replace")
        except OSError:
            return "(no log)"
        tail = " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())
        return ("log tail: " + tail[-chars:]) if tail else "(empty log)"
