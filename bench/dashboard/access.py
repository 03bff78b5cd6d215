"""Who may use a shared dashboard, and for what: the login (and where its password comes from), what
answers before it, a throttle on failed logins, and the models remote users may load.

A share link puts the dashboard on the internet. Anyone holding the link can try passwords, and
anyone logged in can make the server load a model: so until a client has logged in, the server
answers only its login page (without gradio's map of the API), the login and the page's own assets;
failed logins are limited per connecting address, per user name and across all clients, a burst of
simultaneous ones included; and the model of a run must be on an allow-list (the presets' models plus
--allow-model entries), refused in the same words whether or not a folder of that name exists on the server.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import time
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import HTTPConnection, Request

from bench.config import PRESETS_DIR, ConfigError

FREE_FAILURES = 5  # from one address, or for one user name: a user mistyping is not an attacker
GLOBAL_FREE_FAILURES = 20  # from all clients together: several users mistyping are not an attack either
MAX_LOCKOUT_S = 300
MAX_LOGIN_BODY = 16 * 1024  # a user name and a password; a bigger login body is refused unread


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


async def _reply(send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()):
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


def session_user(scope) -> str | None:
    """The user the request's session cookie belongs to, as gradio's own check finds it (gradio's App sets
    itself as scope["app"]); None without a valid one, or when gradio no longer keeps sessions this way."""
    app = scope.get("app")
    tokens, cookie_id = getattr(app, "tokens", None), getattr(app, "cookie_id", None)
    if not isinstance(tokens, dict) or cookie_id is None:
        return None
    cookies = HTTPConnection(scope).cookies
    token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
    return tokens.get(token)


# The login page is gradio's app shell with `auth_required`; its scripts, styles and fonts come from
# /assets/ and /static/ (gradio's own build, no user files) and its theme from /theme.css: found by loading
# the page and logging in with Chromium. Nothing else is needed before the login.
LOGIN_PAGE_PREFIXES = ("/assets/", "/static/")
LOGIN_PAGE_PATHS = {"/theme.css", "/favicon.ico"}
# Gradio's page embeds its map of the API (every endpoint, its parameters, example calls) even in the login
# page. The JSON is written with "<" escaped, so the first ";</script>" ends it.
API_INFO = re.compile(rb"(window\.gradio_api_info = ).*?(;</script>)", re.DOTALL)
NO_API_INFO = rb'\1{"named_endpoints": {}, "unnamed_endpoints": {}}\2'


class LoginRequired:
    """ASGI middleware: a request without a logged-in session gets 401 (a websocket is closed), except the
    login page (GET /, its API map blanked), POST /login and the page's assets. Gradio itself leaves many
    routes open without a login (/openapi.json, /gradio_api/heartbeat/…, /gradio_api/app_id, /manifest.json,
    …); this closes them all at once, including any a later gradio adds."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or session_user(scope) is not None:
            return await self.app(scope, receive, send)
        method, path = scope.get("method", "GET"), scope.get("path", "")
        if scope["type"] == "http":
            if method == "POST" and path.rstrip("/") == "/login":
                return await self.app(scope, receive, send)
            if method in ("GET", "HEAD"):
                if path == "/":
                    return await self.app(scope, receive, _without_api_info(send))
                if path.startswith(LOGIN_PAGE_PREFIXES) or path in LOGIN_PAGE_PATHS or self._startup(scope):
                    return await self.app(scope, receive, send)
            return await _reply(send, 401, "Not authenticated")
        await send({"type": "websocket.close", "code": 1008})  # before accept: the server answers 403

    @staticmethod
    def _startup(scope) -> bool:
        """launch() itself calls /gradio_api/startup-events once, without a login, to start the queue: let
        that one call through (from this machine, before the app has started), and no other."""
        started = getattr(scope.get("app"), "startup_events_triggered", True)
        if scope.get("path") != "/gradio_api/startup-events" or started:
            return False
        try:
            return ipaddress.ip_address((scope.get("client") or ("", 0))[0]).is_loopback
        except ValueError:
            return False


def _without_api_info(send):
    """send, with the page's API map blanked and content-length fixed; the page is one small body."""
    held = {}

    async def blank(message):
        if message["type"] == "http.response.start":
            held["start"], held["body"] = message, b""
            return
        if message["type"] != "http.response.body" or "start" not in held:
            return await send(message)
        held["body"] += message.get("body", b"")
        if message.get("more_body"):
            return
        start, body = held.pop("start"), held.pop("body")
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        if not any(k.lower() == b"content-encoding" for k, _ in headers):  # gradio compresses outside this layer
            body = API_INFO.sub(NO_API_INFO, body)
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    return blank


class _Budget:
    """Failed logins counted against one key, and until when its logins are refused."""
    __slots__ = ("failures", "locked_until")

    def __init__(self):
        self.failures, self.locked_until = 0, 0.0


class LoginThrottle:
    """ASGI middleware on POST /login. Every login is counted against three budgets: its connecting address
    (FREE_FAILURES), its user name (FREE_FAILURES) and all logins together (GLOBAL_FREE_FAILURES). Once a budget
    is spent, logins under it are refused with 429 for a lockout that doubles with each further failure
    (2 s, 4 s, ... up to MAX_LOCKOUT_S), the right password included: while locked out the password is not
    even checked, so guessing gains nothing from waiting. A success clears the budgets it was counted against.

    A login is counted as failed *before* it is checked (and forgiven if it succeeds), with no await between
    the lockout test and the count: so of a burst sent at once, no more are checked than the budget allows,
    instead of every request that arrived before the first answer.

    The address is the socket's: serve() tells uvicorn to trust no X-Forwarded-For, which anyone may send.
    Behind gradio's share tunnel every remote user arrives from the tunnel (127.0.0.1), so there the address
    budget holds for all of them together, which still stops guessing."""

    def __init__(self, app, clock=time.monotonic):
        self.app = app
        self.clock = clock
        self.budgets: dict[tuple[str, str], _Budget] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path", "").rstrip("/") != "/login":
            return await self.app(scope, receive, send)
        keys = [("address", (scope.get("client") or ("?", 0))[0]), ("all", "")]
        if wait := self._locked(keys):  # before reading the body: a locked-out flood costs nothing more
            return await self._refuse(send, wait)
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > MAX_LOGIN_BODY:
                return await _reply(send, 413, "Login too large.")
            if not message.get("more_body"):
                break
        keys.append(("user", await _username(scope, body)))
        # From here to the count no await: two logins of one burst cannot both pass the test before either counts.
        if wait := self._locked(keys):
            return await self._refuse(send, wait)
        # Only a login let through to the check adds budgets, so the global lockout also bounds their number.
        budgets = [self.budgets.setdefault(key, _Budget()) for key in keys]
        now = self.clock()
        for key, budget in zip(keys, budgets):
            budget.failures += 1
            free = GLOBAL_FREE_FAILURES if key[0] == "all" else FREE_FAILURES
            if budget.failures >= free:
                budget.locked_until = now + min(2 ** (budget.failures - free + 1), MAX_LOCKOUT_S)
        status = {}

        async def watch(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, watch)
        if status.get("code") == 200:  # anything else stays counted: it was a login that did not succeed
            for key in keys:
                self.budgets.pop(key, None)

    def _locked(self, keys) -> float:
        now = self.clock()
        return max([self.budgets[k].locked_until - now for k in keys if k in self.budgets] + [0.0])

    @staticmethod
    async def _refuse(send, wait: float):
        await _reply(send, 429, f"Too many failed logins: try again in {wait:.0f} s.",
                      [(b"retry-after", str(int(wait) + 1).encode())])


async def _username(scope, body: bytes) -> str:
    """The login's user name as gradio reads it (a urlencoded or multipart form, stripped); '' if none."""
    async def once():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(dict(scope), once).form()
        try:
            name = form.get("username")
        finally:
            await form.close()
    except (HTTPException, MultiPartException, ValueError):  # malformed: gradio refuses it too; counts for ''
        return ""
    return name.strip()[:256] if isinstance(name, str) else ""
