"""The workloads the field runs: synthetic prompts of exact token lengths, shared prefixes, dataset files (plain,
sessions, ShareGPT) refused line by line before anything starts, multi-turn sessions whose turn k is the whole
history, think time, TTFT by turn, and the continuous engine's prefix sharing seen in later turns' TTFT."""
import json
import math
import subprocess
import sys
from collections import defaultdict

import pytest

from conftest import ROOT

KNOWN_DELAY = f"{sys.executable} {ROOT / 'tests' / 'fixtures' / 'known_delay_server.py'} --port {{port}}"
TTFT_MS = 200.0


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ROOT / "models" / "tiny" / "target"))


@pytest.mark.parametrize("distribution", ["fixed", "uniform", "normal"])
def test_random_prompts_are_exact_in_the_runs_tokenizer(tok, distribution):
    from scenarios.synthetic import random_prompts

    prompts = random_prompts(tok, 40, 100, distribution, 0.25, seed=3)
    lengths = [len(ids) for ids, _ in prompts]
    for ids, text in prompts:
        assert tok(text).input_ids == ids  # a server re-tokenizing the text sees the same tokens
    if distribution == "fixed":
        assert set(lengths) == {100}
    elif distribution == "uniform":
        assert min(lengths) >= 75 and max(lengths) <= 125 and len(set(lengths)) > 5
    else:
        assert min(lengths) >= 25 and max(lengths) <= 175 and len(set(lengths)) > 5
    assert random_prompts(tok, 40, 100, distribution, 0.25, seed=3) == prompts  # seeded
    assert random_prompts(tok, 40, 100, distribution, 0.25, seed=4) != prompts


def test_shared_prefixes_really_share_their_tokens(tok):
    from scenarios.synthetic import shared_prefix_prompts

    prompts = shared_prefix_prompts(tok, groups=3, questions=4, prefix=50, suffix=20, seed=0)
    assert len(prompts) == 12
    by_group = defaultdict(list)
    for group, ids, text in prompts:
        assert tok(text).input_ids == ids and len(ids) == 70
        by_group[group].append(ids)
    assert sorted(len(v) for v in by_group.values()) == [4, 4, 4]
    heads = {g: {tuple(ids[:50]) for ids in v} for g, v in by_group.items()}
    assert all(len(h) == 1 for h in heads.values())  # one prefix per group, exactly P tokens long
    assert len({next(iter(h)) for h in heads.values()}) == 3  # and the groups' prefixes differ
    assert all(len({tuple(ids[50:]) for ids in v}) == 4 for v in by_group.values())  # own suffixes
    assert [g for g, _, _ in prompts] != sorted(g for g, _, _ in prompts)  # interleaved, as traffic


def write_lines(path, items) -> str:
    path.write_text("".join((i if isinstance(i, str) else json.dumps(i)) + "\n" for i in items))
    return str(path)


GOOD_SHAREGPT = {"conversations": [{"from": "human", "value": "Write a function that adds two numbers."},
                                   {"from": "gpt", "value": "def add(a, b):\n    return a + b"},
                                   {"from": "human", "value": "Now subtract."},
                                   {"from": "gpt", "value": "def sub(a, b):\n    return a - b"}]}


@pytest.mark.parametrize("bad, said", [
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "robot", "value": "beep"}]}, "unknown \"from\""),
    ('{"conversations": [', "is not JSON"),
    ({"conversations": [{"from": "gpt", "value": "an answer first"}]}, "no question before it"),
])
def test_a_sharegpt_file_with_a_bad_line_is_refused_in_one_line_before_any_server_starts(tmp_path, bad, said):
    dataset = write_lines(tmp_path / "share.jsonl", [GOOD_SHAREGPT, GOOD_SHAREGPT, bad, GOOD_SHAREGPT])
    marker = tmp_path / "server-started"
    config = tmp_path / "c.json"
    config.write_text(json.dumps(dict(model="tiny/target", methods=["standard"], engine=["server"],
                                      server_command=[f"touch {marker} && sleep 60"], workload="sessions",
                                      dataset=dataset, results=str(tmp_path / "runs.csv"))))
    p = subprocess.run([sys.executable, "app.py", "--config", str(config)], cwd=ROOT, capture_output=True, text=True,
                       env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = [line for line in p.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr
    assert f"line 3 of '{dataset}'" in lines[0] and said in lines[0]
    assert not marker.exists() and not (tmp_path / "runs.csv").exists()


def test_datasets_are_read_as_first_turns_or_as_sessions(tmp_path, tok):
    from scenarios.datasets import read_conversations

    share = write_lines(tmp_path / "share.json", [])  # a JSON array file, ShareGPT's usual form
    (tmp_path / "share.json").write_text(json.dumps([GOOD_SHAREGPT, {"conversations": [
        {"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hello"}]}]))
    plain = write_lines(tmp_path / "plain.jsonl", [{"prompt": "Hi", "output_tokens": 7}])
    sessions = write_lines(tmp_path / "s.jsonl", [{"system": "S", "turns": [{"user": "a", "output_tokens": 3},
                                                                           {"user": "b"}]}])
    first, second = read_conversations(share)
    assert [t.user for t in first.turns] == ["Write a function that adds two numbers.", "Now subtract."]
    assert first.turns[1].reply.startswith("def sub") and second.system == "Be brief." and second.turns[0].reply is None
    (one,) = read_conversations(plain)
    assert one.turns[0].user == "Hi" and one.turns[0].output_tokens == 7
    (conv,) = read_conversations(sessions)
    assert conv.system == "S" and [(t.user, t.output_tokens) for t in conv.turns] == [("a", 3), ("b", None)]
    # ShareGPT's answers set each turn's output length, in the run's tokenizer.
    from scenarios.offered import output_tokens

    reply = GOOD_SHAREGPT["conversations"][1]["value"]
    assert output_tokens(tok, first.turns[0], type("C", (), {"max_new_tokens": 99})) == \
        len(tok(reply, add_special_tokens=False).input_ids)


def load_records(config, row):
    from store import archive
    from store.requests import load_requests

    return load_requests(config.results, {archive.row_key(row)})


def transcript(messages) -> str:
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    return "\n\n".join(f"{names[m['role']]}: {m['content']}" for m in messages) + "\n\nAssistant:"


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_a_session_sends_its_whole_history_after_the_think_time(tmp_path, api):
    """Turn k's prompt is the system prompt, the earlier questions and the server's own earlier answers, exactly;
    it goes out think_time_s after the answer before it; each turn's TTFT is recorded."""
    from bench.config import Config
    from bench.runner import run_all
    from metrics.serving import RequestRecord
    from scenarios.datasets import read_conversations

    log = tmp_path / "received.jsonl"
    dataset = str(ROOT / "datasets" / "sessions.jsonl")
    config = Config.from_dict(dict(
        model="tiny/target", methods=["standard"], engine=["server"], api=api,
        server_command=[f"{KNOWN_DELAY} --log {log}"], workload="sessions", dataset=dataset, session_turns=3,
        num_requests=3, concurrency=[2], think_time_s=0.3, warmup_requests=0, max_new_tokens=13,
        results=str(tmp_path / "runs.csv")))
    (row,) = run_all(config)
    assert row["status"] == "ok" and row["workload"] == "sessions"
    assert row["sessions"] == 3 and row["turns"] == 9
    received = [json.loads(line)["body"] for line in log.read_text().splitlines()]
    # The server engine's first request probes which request dialect the server takes: a first turn again.
    assert len({json.dumps(b.get("messages") or b.get("prompt")) for b in received}) == 9
    answer = " w" * 13  # what the known-delay server streams
    conversations = read_conversations(dataset)[:3]
    for body in received:
        if api == "chat":
            messages = body["messages"]
        else:  # the tiny tokenizer has no chat template: the history goes as a plain transcript
            matches = []
            for conv in conversations:
                head = [{"role": "system", "content": conv.system}] if conv.system else []
                for k in range(3):
                    history = list(head)
                    for j in range(k + 1):
                        history.append({"role": "user", "content": conv.turns[j].user})
                        if j < k:
                            history.append({"role": "assistant", "content": answer})
                    if transcript(history) == body["prompt"]:
                        matches.append(history)
            assert len(matches) == 1, body["prompt"][:200]
            messages = matches[0]
        system = [m for m in messages if m["role"] == "system"]
        conv = next(c for c in conversations if [t.user for t in c.turns[:1]] ==
                    [m["content"] for m in messages if m["role"] == "user"][:1])
        assert system == ([{"role": "system", "content": conv.system}] if conv.system else [])
        turns = [m for m in messages if m["role"] != "system"]
        k = len(turns) // 2
        assert [m["role"] for m in turns] == ["user", "assistant"] * k + ["user"]
        assert [m["content"] for m in turns[0::2]] == [t.user for t in conv.turns[:k + 1]]
        assert all(m["content"] == answer for m in turns[1::2])  # the answers exactly as the server returned them
    records = [RequestRecord.from_json(r) for r in load_records(config, row)]
    by_session = defaultdict(list)
    for r in records:
        by_session[r.session].append(r)
    assert len(by_session) == 3
    for turns in by_session.values():
        turns.sort(key=lambda r: r.turn)
        assert [r.turn for r in turns] == [0, 1, 2]
        for before, after in zip(turns, turns[1:]):
            assert after.scheduled >= before.end + 0.3  # think time counted from the answer's arrival
            assert after.sent >= after.scheduled
    by_turn = [float(v) for v in row["ttft_ms_by_turn"].split()]
    # The server waits TTFT_MS before its first token: a floor; a busy machine adds its own delay above it.
    assert len(by_turn) == 3 and all(TTFT_MS <= v < 2 * TTFT_MS for v in by_turn)
    from store import archive
    from views import charts

    (line,) = charts.ttft_by_turn(archive.load_rows(config.results)).data  # the Results page's TTFT by turn
    assert list(line.x) == [1, 2, 3] and list(line.y) == pytest.approx(by_turn, abs=1e-3)


def session_ttfts(tmp_path, sharing: bool, dataset: str) -> dict:
    from bench.config import Config
    from bench.runner import run_all
    from metrics.serving import RequestRecord, ttft_s

    config = Config.from_dict(dict(
        model="tiny/target", methods=["standard"], engine=["continuous"], workload="sessions", dataset=dataset,
        concurrency=[1], warmup_requests=2, max_new_tokens=8, cb_prefix_sharing=sharing, cb_num_blocks=256,
        cb_block_size=32, device="cpu", dtype="float32", results=str(tmp_path / f"{sharing}.csv")))
    (row,) = run_all(config)
    assert row["status"] == "ok", row["error"]
    assert f"cb_prefix_sharing={str(sharing).lower()}" in row["engine_options"]
    records = [RequestRecord.from_json(r) for r in load_records(config, row)]
    return {(r.session, r.turn): ttft_s(r) for r in records if r.status == "ok"}


def test_prefix_sharing_on_the_continuous_engine_answers_later_turns_sooner(tmp_path):
    """The same sessions with cb_prefix_sharing off and on, paired by session and turn: later turns, whose prompt
    repeats the whole history, start sooner when its blocks are shared; the interval of the ratio says so."""
    from metrics.stats import geometric_mean, geometric_mean_ci

    context = " ".join(["The project reads a JSON config, validates every key and measures each method."] * 12)
    dataset = write_lines(tmp_path / "s.jsonl", [
        {"system": f"{context} Session {i}.", "turns": [{"user": f"Write function {i}.", "output_tokens": 8},
                                                        {"user": "Shorter.", "output_tokens": 8},
                                                        {"user": "Add a test.", "output_tokens": 8}]}
        for i in range(6)])
    off, on = session_ttfts(tmp_path, False, dataset), session_ttfts(tmp_path, True, dataset)
    later = sorted(k for k in off if k[1] >= 1 and k in on)
    assert len(later) == 12
    ratios = [on[k] / off[k] for k in later]
    low, high = geometric_mean_ci(ratios)
    assert high < 1.0, (geometric_mean(ratios), low, high)


def test_a_length_sweep_draws_ttft_against_the_prompt_length(tmp_path):
    from bench.config import Config
    from bench.runner import run_all
    from store import archive
    from views import charts

    config = Config.from_dict(dict(
        model="tiny/target", methods=["standard"], engine=["hf"], workload="random", input_tokens=[16, 96],
        request_rate=[20.0], num_requests=6, warmup_requests=1, max_new_tokens=4, device="cpu", dtype="float32",
        results=str(tmp_path / "runs.csv")))
    rows = run_all(config)
    assert [r["input_tokens"] for r in rows] == [16, 96]
    assert [r["prompt_tokens"] for r in rows] == [16, 96]  # every prompt exactly that long
    assert all("input=" in r["setting"] for r in rows)
    fig = charts.ttft_by_prompt_length(archive.load_rows(config.results))
    (line,) = fig.data
    assert list(line.x) == [16, 96]
    assert not math.isnan(line.y[0]) and not math.isnan(line.y[1])


@pytest.mark.parametrize("keys, said", [
    (dict(input_tokens=[64]), "set workload to random or shared_prefix"),
    (dict(think_time_s=1.0), "set workload to sessions"),
    (dict(workload="random", dataset="datasets/chat_mix.jsonl"), "drop one"),
    (dict(workload="sessions", dataset="nowhere.jsonl"), "not found"),
])
def test_workload_keys_that_do_not_go_together_are_refused_by_name(keys, said):
    from bench.config import Config, ConfigError

    with pytest.raises(ConfigError, match=said):
        Config.from_dict(dict(model="tiny/target", methods=["standard"], engine=["continuous"], **keys),
                         check_models=False)


def test_in_process_reasoning_is_split_on_the_think_end_token():
    """The first answer token is the one after </think>; the tokens through it are reasoning; a request that never
    closed its reasoning has no answer token yet."""
    from metrics.serving import RequestRecord
    from metrics.thinking import split_reasoning

    end = 7
    rec = RequestRecord(0, 0, 0.0, token_times=[0.1, 0.2, 0.3, 0.4, 0.5])
    split_reasoning(rec, [3, 4, end, 5, 6], end)
    assert rec.reasoning_tokens == 3 and rec.first_answer == 0.4
    open_ended = RequestRecord(0, 0, 0.0, token_times=[0.1, 0.2])
    split_reasoning(open_ended, [3, 4], end)
    assert open_ended.reasoning_tokens == 2 and math.isnan(open_ended.first_answer)


def test_thinking_with_a_model_that_cannot_reason_apart_is_refused_by_name(tmp_path):
    from bench.config import Config, ConfigError

    with pytest.raises(ConfigError, match="config key 'thinking'.*tiny/target"):
        Config.from_dict(dict(model="tiny/target", methods=["standard"], engine=["continuous"], workload="sessions",
                              thinking=True, results=str(tmp_path / "r.csv")))


@pytest.mark.parametrize("too_long", ["skip", "refuse"])
def test_a_line_too_long_for_the_context_is_skipped_and_counted_or_refused(tmp_path, too_long):
    from bench.config import Config
    from bench.runner import run_all

    huge = " ".join(["return"] * 5000)  # beyond the tiny target's 4096-token context
    dataset = write_lines(tmp_path / "d.jsonl", [{"prompt": "def f(x):", "output_tokens": 13}, {"prompt": huge},
                                                 {"prompt": "import os", "output_tokens": 13}])
    config = Config.from_dict(dict(
        model="tiny/target", methods=["standard"], engine=["server"], server_command=[KNOWN_DELAY], dataset=dataset,
        too_long=too_long, concurrency=[2], warmup_requests=0, max_new_tokens=13, results=str(tmp_path / "runs.csv")))
    (row,) = run_all(config)
    if too_long == "skip":
        assert row["status"] == "ok" and row["requests"] == 2
        assert "1 dataset line longer than the model's context of 4096 tokens skipped" in row["notes"]
    else:
        assert row["status"] == "error"
        assert f"line 2 of '{dataset}'" in row["error"] and "too_long" in row["error"]
