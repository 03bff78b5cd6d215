"""Who may use a shared dashboard, and for what: the login (and where its password comes from), a
throttle on failed logins, and the models remote users may load.

A share link puts the dashboard on the internet. Anyone holding the link can try passwords, and
anyone logged in can make the server load a model: so failed logins slow down per client, and the
model of a run must be on an allow-list (the presets' models plus --allow-model entries), refused in
the same words whether or not a folder of that name exists on the server.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from bench.config import PRESETS_DIR, ConfigError

FREE_FAILURES = 5  # a user mistyping is not an attacker
MAX_LOCKOUT_S = 300


def read_login(auth: str | None, auth_file: str | None) -> tuple[tuple[str, str] | None, str]:
    """(user, password) from --auth-file, --auth or BENCH_AUTH, and a warning line ('' if none).

    --auth puts the password in the process list (`ps`), readable by every user of the machine."""
    if auth_file:
        try:
            text, source = Path(auth_file).read_text().strip(), f"--auth-file {auth_file}"
        except OSError as e:
            raise ConfigError(f"--auth-file: cannot read '{auth_file}' ({e.strerror or e})")
    elif auth:
        text, source = auth, "--auth"
    else:
        text, source = os.environ.get("BENCH_AUTH", ""), "BENCH_AUTH"
    if not text:
        return None, ""
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ConfigError(f"{source} must be USER:PASSWORD with both parts non-empty")
    warning = ("warning: --auth shows the password to every user of this machine (ps); "
               "use BENCH_AUTH=USER:PASSWORD or --auth-file FILE instead") if auth and not auth_file else ""
    return (user, password), warning


def preset_models() -> set[str]:
    """Every model and draft model the shipped presets name."""
    models = set()
    for path in PRESETS_DIR.glob("*.json"):
        data = json.loads(path.read_text())
        models |= {data[k] for k in ("model", "draft_model") if isinstance(data.get(k), str) and data[k]}
    return models


def allow_list(extra: list[str] | None) -> frozenset[str]:
    return frozenset(preset_models() | set(extra or []))


def check_model_access(data: dict, allowed: frozenset[str] | None) -> str:
    """'' when the run's models are allowed (or no list applies); else one line. It never looks at the disk:
    the same answer for a folder that exists and one that does not."""
    if allowed is None or not isinstance(data, dict):
        return ""
    for key in ("model", "draft_model"):
        mid = data.get(key)
        if isinstance(mid, str) and mid and mid not in allowed:
            return (f"config key '{key}': '{mid}' is not among the models this shared dashboard allows "
                    f"({', '.join(sorted(allowed))}); its owner can add one with --allow-model")
    return ""


class LoginThrottle:
    """ASGI middleware: after FREE_FAILURES failed logins from one client, that client's logins are refused
    with 429 for a lockout that doubles with each further failure (2 s, 4 s, ... up to 5 minutes). While
    locked out, the password is not even checked, so guessing gains nothing from waiting requests.

    The client is the connecting address; behind gradio's share tunnel every remote user arrives from the
    tunnel, so there the throttle holds for all of them together, which still stops guessing."""

    def __init__(self, app, clock=time.monotonic):
        self.app = app
        self.clock = clock
        self.failures: dict[str, int] = {}
        self.locked_until: dict[str, float] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path", "").rstrip("/") != "/login":
            return await self.app(scope, receive, send)
        client = (scope.get("client") or ("?", 0))[0]
        wait = self.locked_until.get(client, 0) - self.clock()
        if wait > 0:
            body = json.dumps({"detail": f"Too many failed logins: try again in {wait:.0f} s."}).encode()
            await send({"type": "http.response.start", "status": 429,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after", str(int(wait) + 1).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        status = {}

        async def watch(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        if status.get("code") == 200:
            self.failures.pop(client, None)
            self.locked_until.pop(client, None)
        elif status.get("code") in (400, 401, 403):
            n = self.failures.get(client, 0) + 1
            self.failures[client] = n
            if n >= FREE_FAILURES:
                self.locked_until[client] = self.clock() + min(2 ** (n - FREE_FAILURES + 1), MAX_LOCKOUT_S)
