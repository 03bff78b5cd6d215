"""A shared dashboard's door: failed logins are throttled per client address (the socket's, never a header),
per user name and across all clients, a burst included; until logged in, nothing but the login page answers;
the password need not sit in `ps`; and remote users run only allowed models, refused alike whether a folder
exists or not. Real servers."""
from __future__ import annotations

import asyncio
import json
import re
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import httpx
import pytest
from gradio_client import Client

from bench.dashboard.app import build_app, launch_options, serve
from bench.config import ConfigError, preset_path, read_json
from bench.dashboard.access import (FREE_FAILURES, GLOBAL_FREE_FAILURES, LoginThrottle, check_model_access,
                                    read_login)
from conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def login(url: str, user: str, password: str) -> int:
    data = urllib.parse.urlencode({"username": user, "password": password}).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url + "login", data=data), timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture
def guarded(tmp_path):
    demo = build_app(tmp_path / "runs.csv")
    serve(demo, port=free_port(), auth=("me", "right"), prevent_thread_lock=True, quiet=True)
    yield demo.local_url
    demo.close()


@pytest.fixture
def frozen(tmp_path):
    """A guarded server whose throttle's clock stands still, so no lockout ends in the middle of a burst and
    the counts below do not depend on how fast this machine answers."""
    demo = build_app(tmp_path / "runs.csv")
    serve(demo, port=free_port(), auth=("me", "right"), prevent_thread_lock=True, quiet=True)
    layer = demo.server_app.middleware_stack  # built by launch's own first request
    while not isinstance(layer, LoginThrottle):
        layer = layer.app
    now = layer.clock()
    layer.clock = lambda: now
    yield demo.local_url
    demo.close()


def burst(url: str, attempts: list[tuple[str, str, str, dict]]) -> list[int]:
    """Every (source address, user, password, headers) login sent at once, each on its own connection from
    that loopback address (Linux routes all of 127/8 to lo); the status codes, in order."""
    async def run() -> list[int]:
        clients = {src: httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=src),
                                          limits=httpx.Limits(max_connections=None), timeout=60)
                   for src in {a[0] for a in attempts}}
        try:
            answers = await asyncio.gather(*(
                clients[src].post(url + "login", data={"username": user, "password": password}, headers=headers)
                for src, user, password, headers in attempts))
        finally:
            for client in clients.values():
                await client.aclose()
        return [a.status_code for a in answers]

    return asyncio.run(run())


def test_a_burst_of_wrong_logins_is_checked_no_more_than_the_free_failures(frozen):
    codes = burst(frozen, [("127.0.0.1", "me", "wrong", {})] * 100)
    assert codes.count(400) == FREE_FAILURES and codes.count(429) == 100 - FREE_FAILURES
    assert burst(frozen, [("127.0.0.1", "me", "right", {})]) == [429]


def test_a_forged_forwarded_for_header_is_no_fresh_client(guarded):
    # Each attempt claims another address and another user name: only the socket's address links them.
    for i in range(FREE_FAILURES):
        assert burst(guarded, [("127.0.0.1", f"user{i}", "wrong", {"X-Forwarded-For": f"203.0.113.{i}"})]) == [400]
    assert burst(guarded, [("127.0.0.1", "me", "right", {"X-Forwarded-For": "198.51.100.7"})]) == [429]


def test_the_client_is_the_connecting_address(guarded):
    for i in range(FREE_FAILURES):
        assert burst(guarded, [("127.0.0.2", f"user{i}", "wrong", {})]) == [400]
    assert burst(guarded, [("127.0.0.2", "me", "right", {})]) == [429]
    assert burst(guarded, [("127.0.0.1", "me", "right", {})]) == [200]  # another address is another client


def test_one_user_name_has_its_budget_across_addresses(guarded):
    for i in range(FREE_FAILURES):
        assert burst(guarded, [(f"127.0.0.{10 + i}", "me", "wrong", {})]) == [400]
    assert burst(guarded, [("127.0.0.99", "me", "right", {})]) == [429]


def test_a_burst_from_many_addresses_and_names_is_bounded_by_the_global_budget(frozen):
    sources = [f"127.0.0.{2 + i}" for i in range(GLOBAL_FREE_FAILURES // FREE_FAILURES + 1)]
    attempts = [(src, f"{src}-{k}", "wrong", {}) for src in sources for k in range(FREE_FAILURES + 1)]
    codes = burst(frozen, attempts)
    assert codes.count(400) == GLOBAL_FREE_FAILURES and codes.count(429) == len(attempts) - GLOBAL_FREE_FAILURES
    assert burst(frozen, [("127.0.0.200", "me", "right", {})]) == [429]  # a fresh client, the right password


def status_of(client: httpx.Client, method: str, path: str) -> int:
    with client.stream(method, path) as r:  # the heartbeat is an endless stream: the status is enough
        return r.status_code


def test_until_logged_in_only_the_login_page_answers(guarded):
    with httpx.Client(base_url=guarded, timeout=30) as client:
        page = client.get("/")
        assert page.status_code == 200 and '"auth_required":true' in page.text
        api_map = json.loads(re.search(r"window\.gradio_api_info = (.*?);</script>", page.text).group(1))
        assert api_map == {"named_endpoints": {}, "unnamed_endpoints": {}} and "config_text" not in page.text
        assets = set(re.findall(r'(?:src|href)="\./((?:assets|static)/[^"?]+)', page.text)) | {"theme.css"}
        assert len(assets) > 2 and {a: status_of(client, "GET", a) for a in assets} == dict.fromkeys(assets, 200)
        closed = ["/openapi.json", "/docs", "/config", "/gradio_api/info", "/gradio_api/heartbeat/abc",
                  "/gradio_api/startup-events", "/gradio_api/app_id", "/gradio_api/token", "/gradio_api/user",
                  "/gradio_api/runs", "/manifest.json", "/monitoring/x", "/gradio_api/queue/data",
                  "/gradio_api/file=/etc/hostname", "/logout"]
        assert {p: status_of(client, "GET", p) for p in closed} == dict.fromkeys(closed, 401)
        posts = ["/gradio_api/queue/join", "/gradio_api/upload", "/gradio_api/reset", "/gradio_api/cancel",
                 "/gradio_api/vibe-edit"]
        assert {p: status_of(client, "POST", p) for p in posts} == dict.fromkeys(posts, 401)
        assert client.post("/login", data={"username": "me", "password": "right"}).status_code == 200
        # Logged in (the session cookie): the page with its layout, the config and the heartbeat answer.
        assert '"auth_required":true' not in client.get("/").text
        assert status_of(client, "GET", "/config") == 200
        assert status_of(client, "GET", "/gradio_api/heartbeat/abc") == 200
    api = Client(guarded, auth=("me", "right"), verbose=False)  # the API works for a logged-in client
    assert "/run" in api.view_api(print_info=False, return_format="dict")["named_endpoints"]
    api.predict(api_name="/stop")  # through the queue: join, data, heartbeat


def test_lockout_doubles_and_a_success_resets():
    clock = [0.0]
    answers = iter([400] * 7 + [200])

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": next(answers), "headers": []})
        await send({"type": "http.response.body", "body": b""})

    throttle = LoginThrottle(app, clock=lambda: clock[0])

    def attempt() -> int:
        sent = []

        async def send(message):
            sent.append(message)

        async def receive():
            return {"type": "http.request", "body": b"username=me&password=pw", "more_body": False}

        scope = {"type": "http", "method": "POST", "path": "/login", "client": ("10.0.0.1", 5),
                 "headers": [(b"content-type", b"application/x-www-form-urlencoded")]}
        asyncio.run(throttle(scope, receive, send))
        return sent[0]["status"]

    assert [attempt() for _ in range(FREE_FAILURES)] == [400] * FREE_FAILURES
    assert attempt() == 429
    clock[0] += 2.5  # first lockout: 2 s
    assert attempt() == 400
    assert attempt() == 429
    clock[0] += 3  # the second failure past the free ones locks for 4 s
    assert attempt() == 429
    clock[0] += 2
    assert attempt() == 400
    clock[0] += 10
    assert attempt() == 200 and not throttle.budgets  # a success forgets the failures


def test_password_from_a_file_or_the_environment_and_a_warning_for_the_command_line(tmp_path, monkeypatch):
    secret = tmp_path / "auth"
    secret.write_text("me:from-file\n")
    assert read_login(None, str(secret)) == (("me", "from-file"), "")
    monkeypatch.setenv("BENCH_AUTH", "me:from-env")
    assert read_login(None, None) == (("me", "from-env"), "")
    login_, warning = read_login("me:typed", None)
    assert login_ == ("me", "typed") and "ps" in warning and "BENCH_AUTH" in warning
    with pytest.raises(ConfigError, match="--auth-file"):
        read_login(None, str(tmp_path / "missing"))


def test_share_with_auth_on_the_command_line_warns_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "BENCH_AUTH"}
    done = subprocess.run([sys.executable, "app.py", "--share", "--auth", "bad"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "USER:PASSWORD" in done.stderr and "Traceback" not in done.stderr


def test_models_off_the_allow_list_are_refused_alike_whether_the_folder_exists_or_not(tmp_path):
    allowed = frozenset({"tiny/target", "tiny/draft"})
    real = tmp_path / "real-model"
    real.mkdir()
    (real / "config.json").write_text("{}")
    said_real = check_model_access({"model": str(real)}, allowed)
    said_missing = check_model_access({"model": str(tmp_path / "no-such-model")}, allowed)
    assert said_real and said_real.replace(str(real), "X") == said_missing.replace(str(tmp_path / "no-such-model"), "X")
    assert check_model_access({"model": "tiny/target", "draft_model": "tiny/draft"}, allowed) == ""
    assert check_model_access({"model": str(real)}, None) == ""  # a local dashboard has no list


def test_a_shared_dashboard_refuses_an_unlisted_model_before_loading_anything(tmp_path):
    from bench.dashboard.access import allow_list

    results = tmp_path / "runs.csv"
    demo = build_app(results, allowed_models=allow_list(["tiny/target"]))
    demo.queue(api_open=False).launch(prevent_thread_lock=True, server_port=free_port(), quiet=True,
                                      **launch_options(demo))
    try:
        config = read_json(preset_path("tiny")) | dict(model=str(ROOT / "bench"), methods=["standard"])
        outputs = Client(demo.local_url, verbose=False).predict(json.dumps(config), api_name="/run")
        text = " ".join(v for v in outputs if isinstance(v, str))
        assert "not among the models this shared dashboard allows" in text
        assert "config.json" not in text and "no such folder" not in text  # nothing about the disk leaks
        assert not results.exists() or results.stat().st_size == 0
    finally:
        demo.close()
