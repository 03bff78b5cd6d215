"""Dataset files as conversations, read without torch (the config check reads them before any model loads).

Every line (or entry of a JSON array) becomes a Conversation: an optional system prompt and its turns, each a
user message with an output length. Three formats, told apart by their keys, line by line:
- the field's plain JSONL: {"prompt": ..., "output_tokens": ...} (one turn);
- this project's sessions: {"system": ..., "turns": [{"user": ..., "output_tokens": ...}, ...]};
- ShareGPT: {"conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}, ...]}; a
  turn's output length is then its reply's length in the run's tokenizer (counted in scenarios/sender.py).

Nothing is downloaded. A file that does not parse raises ValueError naming the file, the line (or entry) and
what was wrong, which the config check turns into one line and exit 2 before any server starts.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

MAX_OUTPUT = 32768
USER = {"human", "user"}
ASSISTANT = {"gpt", "assistant", "chatgpt", "bard", "bing", "model"}


@dataclass
class Turn:
    user: str
    output_tokens: int | None = None  # None: the run's max_new_tokens, or the reply's length when there is one
    reply: str | None = None  # the dataset's own answer (ShareGPT), only measured for its length


@dataclass
class Conversation:
    turns: list[Turn]
    system: str | None = None
    line: int = 0  # where it came from, for messages


@dataclass
class Where:
    path: str
    line: int
    entry: bool = False  # a JSON array's entry rather than a JSONL line

    def fail(self, what: str) -> ValueError:
        return ValueError(f"config key 'dataset': {'entry' if self.entry else 'line'} {self.line} of '{self.path}' "
                          f"{what}")


def output_length(value, where: Where, key: str = "output_tokens") -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_OUTPUT:
        raise where.fail(f"has \"{key}\" {json.dumps(value)}: it must be an integer in 1..{MAX_OUTPUT}")
    return value


def text(value, where: Where, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.fail(f"needs a non-empty \"{key}\" string")
    return value


def sharegpt(item: dict, where: Where) -> Conversation:
    messages = item["conversations"]
    if not isinstance(messages, list) or not messages:
        raise where.fail("has \"conversations\" that is not a non-empty list")
    system, turns = None, []
    for n, m in enumerate(messages, 1):
        if not isinstance(m, dict) or not isinstance(m.get("from"), str) or not isinstance(m.get("value"), str):
            raise where.fail(f"message {n} needs \"from\" and \"value\" strings")
        role = m["from"].lower()
        if role == "system" and not turns and system is None:
            system = m["value"]
        elif role in USER:
            if turns and turns[-1].reply is None:
                raise where.fail(f"message {n}: two user messages in a row")
            turns.append(Turn(text(m["value"], where, "value")))
        elif role in ASSISTANT:
            if not turns or turns[-1].reply is not None:
                raise where.fail(f"message {n}: an answer with no question before it")
            turns[-1].reply = m["value"]
        else:
            raise where.fail(f"message {n} has an unknown \"from\" {json.dumps(m['from'])} (use human or gpt)")
    if not turns:
        raise where.fail("has no user message")
    return Conversation(turns, system, where.line)


def sessions(item: dict, where: Where) -> Conversation:
    turns = item["turns"]
    if not isinstance(turns, list) or not turns:
        raise where.fail("has \"turns\" that is not a non-empty list")
    out = []
    for n, t in enumerate(turns, 1):
        if not isinstance(t, dict):
            raise where.fail(f"turn {n} is not an object with \"user\" and \"output_tokens\"")
        out.append(Turn(text(t.get("user"), where, f"turns[{n}].user"), output_length(t.get("output_tokens"), where)))
    system = item.get("system")
    if system is not None and not isinstance(system, str):
        raise where.fail("has a \"system\" that is not a string")
    return Conversation(out, system, where.line)


def conversation(item, where: Where) -> Conversation:
    if not isinstance(item, dict):
        raise where.fail("is not a JSON object")
    if "conversations" in item:
        return sharegpt(item, where)
    if "turns" in item:
        return sessions(item, where)
    if "prompt" in item:
        return Conversation([Turn(text(item["prompt"], where, "prompt"), output_length(item.get("output_tokens"), where))],
                            line=where.line)
    raise where.fail("needs \"prompt\" (plain JSONL), \"turns\" (sessions) or \"conversations\" (ShareGPT)")


def read_conversations(path: str) -> list[Conversation]:
    """Every conversation of a JSONL file (one per line) or a JSON array file (ShareGPT's usual form)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config key 'dataset': file '{path}' not found")
    try:
        raw = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"config key 'dataset': '{path}' is not UTF-8 text (byte {e.start})")
    if raw.lstrip().startswith("["):  # one JSON array
        try:
            entries = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(f"config key 'dataset': line {e.lineno} of '{path}' is not JSON ({e.msg})")
        out = [conversation(item, Where(path, n, entry=True)) for n, item in enumerate(entries, 1)]
    else:
        out = []
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"config key 'dataset': line {number} of '{path}' is not JSON ({e.msg})")
            out.append(conversation(item, Where(path, number)))
    if not out:
        raise ValueError(f"config key 'dataset': '{path}' holds no prompts")
    return out
