"""A shared dashboard's door: failed logins are throttled per client, the password need not sit in `ps`,
and remote users run only allowed models, refused alike whether a folder exists or not. Real servers."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest
from gradio_client import Client

from bench.dashboard.app import build_app, launch_options, serve
from bench.config import ConfigError, preset_path, read_json
from bench.dashboard.access import FREE_FAILURES, LoginThrottle, check_model_access, read_login
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


def test_failed_logins_lock_the_client_out_even_for_the_right_password(guarded):
    assert login(guarded, "me", "right") == 200
    for _ in range(FREE_FAILURES):
        assert login(guarded, "me", "wrong") == 400
    assert login(guarded, "me", "right") == 429  # locked out: the password is not even checked
    assert login(guarded, "me", "wrong") == 429


def test_lockout_doubles_and_a_success_resets(guarded):
    import asyncio

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

        scope = {"type": "http", "method": "POST", "path": "/login", "client": ("10.0.0.1", 5)}
        asyncio.run(throttle(scope, None, send))
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
    assert attempt() == 200 and not throttle.failures  # a success forgets the failures


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
