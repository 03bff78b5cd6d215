"""Config options as every axis declares them: one field type with its help, kind, choices and limits.

Methods, engines and scenarios each list their own keys (`options = {"typical_p": option(...)}`); `bench.config`
builds Config from the shared keys plus theirs, the CLI makes a flag of each, the dashboard a form field. It lives
here, in the lowest axis, so every axis above can declare options without an arrow pointing up.

A kind is one of str, optstr, int, float, bool, list[str], list[int], list[float], int|list[int], str|list[str].
`Kind` parses that text once; `coerce` checks a JSON value against it, `from_text` reads a flag's text.
"""
from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """Bad configuration; the message is one line that names the key and what is allowed."""


SCALARS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}
PLURALS = {"str": "strings", "int": "integers", "float": "numbers", "bool": "true/false values"}


@dataclass(frozen=True)
class Kind:
    element: str  # str, int, float or bool
    listed: bool = False  # a list is accepted
    single: bool = True  # a single value is accepted (with `listed`: and read as a list of one, for strings)
    optional: bool = False  # null (or an empty string) is accepted

    @classmethod
    def parse(cls, text: str) -> "Kind":
        if text == "optstr":
            return cls("str", optional=True)
        if text in SCALARS:
            return cls(text)
        scalar, _, listed = text.rpartition("|") if "|" in text else ("", "", text)
        element = listed.removeprefix("list[").removesuffix("]")
        if not listed.startswith("list[") or element not in SCALARS or scalar not in ("", element):
            raise ValueError(f"unknown option kind {text!r}")
        return cls(element, listed=True, single=bool(scalar))

    def describe(self, choices=None, lo=None, hi=None) -> str:
        one, many = SCALARS[self.element], PLURALS[self.element]
        what = (f"{one} or a list of {many}" if self.single else f"a list of {many}") if self.listed else one
        if self.optional:
            what += " or null"
        if choices:
            what += f" from {', '.join(choices)}"
        if lo is not None:
            what += f" in {lo}..{hi}"
        return what

    def coerce(self, key: str, value, meta: dict, empty_ok: bool = True):
        """`value` checked against this kind and the field's limits; lists come back as lists."""
        def bad(got=value):
            return ConfigError(f"config key '{key}' must be {self.describe(meta['choices'], meta['lo'], meta['hi'])}, "
                               f"got {json.dumps(got)}")

        def scalar(v):
            if self.element == "str":
                if isinstance(v, str) and not v.strip() and meta.get("blank"):
                    raise ConfigError(f"config key '{key}' {meta['blank']}")
                if not isinstance(v, str) or not v.strip():
                    raise bad()
                if meta["choices"] and v not in meta["choices"]:
                    close = difflib.get_close_matches(v, list(meta["choices"]), n=1, cutoff=0.5) or \
                        [c for c in meta["choices"] if v.lower() in c.lower()][:1]
                    raise ConfigError(f"{bad(v)}; did you mean {close[0]}?") if close else bad(v)
                return v if meta.get("exact") else v.strip()
            if self.element == "bool":
                if not isinstance(v, bool):
                    raise bad()
                return v
            if self.element == "int" and (isinstance(v, bool) or not isinstance(v, int)):
                if not (isinstance(v, float) and v.is_integer()):
                    raise bad()
                v = int(v)
            if self.element == "float":
                if isinstance(v, str) and meta["hi"] == math.inf:  # "inf" (JSON has no infinity), and the form's text
                    try:
                        v = float(v)
                    except ValueError:
                        raise bad() from None
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) or v == meta["hi"]):
                    raise bad()
                v = float(v)
            if meta["lo"] is not None and not (meta["lo"] <= v <= meta["hi"]):
                raise bad(v)
            return v

        if self.optional and value in (None, ""):
            return None
        if not self.listed:
            return scalar(value)
        if self.single and not isinstance(value, list):
            v = scalar(value)
            return [v] if self.element == "str" else v
        if not isinstance(value, list) or (not value and not empty_ok):
            raise bad()
        out = [scalar(v) for v in value]
        if not meta.get("repeats") and len(set(map(str, out))) != len(out):
            raise ConfigError(f"config key '{key}' lists a value twice: {json.dumps(value)}")
        return out

    def from_text(self, key: str, text: str, flag: str):
        """A command-line flag's text as the config value; `coerce` checks kinds and limits afterwards."""
        cast = {"int": int, "float": float}.get(self.element, str)
        try:
            if self.listed:
                items = [cast(x.strip()) for x in split_list(text) if x.strip()]
                one = self.single and len(items) == 1 and "," not in text
                return items[0] if one and self.element != "str" else items
            if self.optional:
                return text or None
            return cast(text)
        except ValueError:
            one, many = SCALARS[self.element], PLURALS[self.element]
            expected = (f"{one} or a comma-separated list of {many}" if self.single else
                        f"a comma-separated list of {many}") if self.listed else one
            raise ConfigError(f"flag {flag} got {text!r}: expected {expected} (see config key '{key}' in --help)") \
                from None


def split_list(text: str) -> list[str]:
    """A flag's comma-separated list, split only on commas outside quotes and brackets, so a server command can
    carry a JSON argument (`--speculative-config '{"method": "ngram", "num_speculative_tokens": 4}'`)."""
    items, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth = max(depth - 1, 0)
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if quote or depth:  # an apostrophe in plain text, not a quoted argument: every comma splits
        return text.split(",")
    return items + [text[start:]]


def option(default, help: str, kind: str, choices=None, lo=None, hi=None, flag: str | None = None,
           exact: bool = False, repeats: bool = False, blank: str | None = None, label: str | None = None):
    """A config field that carries its own help, kind and limits. `flag` renames its CLI flag; `exact` keeps a
    string as written (prompts keep their whitespace); `repeats` lets a list hold one value twice; `blank` is
    what the error says of an empty string; `label` names its form field (default: the key in words)."""
    meta = dict(help=help, kind=kind, type=Kind.parse(kind), choices=choices, lo=lo, hi=hi, flag=flag,
                exact=exact, repeats=repeats, blank=blank, label=label)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)
