"""The requests of one load row against an OpenAI-compatible endpoint, over HTTP.

Each request streams (SSE) and every event is stamped on arrival with the client's clock:
- TTFT ends at the first event carrying content (or reasoning content), never at a role-only event;
- tokens per event come from the server's own usage figures when it sends them with every chunk (vLLM's
  continuous_usage_stats), else from the run's tokenizer over the text so far, reconciled with the final usage;
- an event of k tokens is k inter-token gaps (metrics/serving.py), so chunked streaming is not counted as slow.

What a request asks for is read off the Request the method builds (scenarios/load.py): temperature 0 for
greedy, temperature/top_p/top_k for sampling, vLLM's beam search for beams (an error row where refused).
Drafting (speculative decoding, prompt lookup) is configured when the server is started, so such rows send
plain requests and record the server command; acceptance comes from the server's Prometheus counters.

Servers differ in what they accept beyond the OpenAI schema, so the first request tries request dialects in
order until one is accepted: vLLM's (ignore_eos + min_tokens fix the output length, per-chunk usage),
transformers serve's (a generation_config with min_new_tokens), then plain OpenAI (length not fixed: noted).
"""
from __future__ import annotations

import asyncio
import json
import os
import time

from decoding.types import UnsupportedSetting
from engines.server.process import ServerFailed, urls
from metrics.serving import RequestRecord, spread_tokens

DIALECTS = ("vllm", "vllm-usage", "transformers", "openai", "plain")
SPEC_COUNTERS = {"drafted_tokens": "spec_decode_num_draft_tokens", "accepted_tokens": "spec_decode_num_accepted_tokens"}


def prometheus_totals(text: str) -> dict[str, float]:
    """Totals of the spec-decode counters in a Prometheus exposition, summed over label sets (engines, models)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if not name.endswith("_total"):
            continue
        for column, stem in SPEC_COUNTERS.items():
            if name.rsplit(":", 1)[-1] == stem + "_total":  # not the per-position counters beside it
                try:
                    out[column] = out.get(column, 0.0) + float(line.rsplit("}", 1)[-1].split()[0])
                except (ValueError, IndexError):
                    pass
    return out


def content_of(event: dict) -> str:
    """Text of a completions or chat chunk; reasoning content counts, a role alone does not."""
    choices = event.get("choices") or []
    if not choices:
        return ""
    choice = choices[0]
    if "text" in choice:
        return choice.get("text") or ""
    delta = choice.get("delta") or {}
    return (delta.get("content") or "") + (delta.get("reasoning_content") or delta.get("reasoning") or "")


class ServerSession:
    """The requests of one load row against one endpoint; engine is the ServerEngine that keeps it up."""

    def __init__(self, engine, job, template):
        self.engine, self.job, self.template = engine, job, template
        config = job.ctx.config
        self.config, self.api = config, engine.api
        self.tokenizer = job.ctx.models.tokenizer
        self.dialect = None
        self.model = engine.served_model
        self.client = None
        self.streams: dict[int, tuple[list, dict | None]] = {}  # request id -> (events, final usage)
        self.notes: set[str] = set()
        self.counters: dict[str, float] = {}
        key = os.environ.get(engine.api_key_env or "", "")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    @property
    def fixed(self) -> bool:
        return self.template.min_new_tokens >= self.template.max_new_tokens

    async def start(self) -> None:
        import httpx

        config, job = self.config, self.job
        endpoint = await asyncio.to_thread(self.engine.endpoint, config, job.point.load.server, job.ctx.run_id)
        self.urls = urls(endpoint)
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(config.request_timeout_s, connect=30.0),
                                        limits=httpx.Limits(max_connections=None, max_keepalive_connections=None))
        try:
            if not self.model:
                response = await self.client.get(self.urls["models"], headers=self.headers)
                models = response.json().get("data") or [] if response.status_code == 200 else []
                if not models:
                    raise ServerFailed(f"no served_model set and {self.urls['models']} lists none "
                                       f"(HTTP {response.status_code})")
                self.model = models[0]["id"]
            if self.template.use_draft or self.template.prompt_lookup_num_tokens:
                self.notes.add("drafting is configured on the server (see server_command), not per request")
            await self.negotiate()
        except BaseException:
            await self.client.aclose()
            raise

    async def begin(self) -> None:
        """After the warm-up: the counters the load's deltas start from."""
        self.counters = await self.read_counters()

    async def read_counters(self) -> dict[str, float]:
        try:
            response = await self.client.get(self.urls["metrics"], headers=self.headers, timeout=10)
        except Exception:
            return {}
        return prometheus_totals(response.text) if response.status_code == 200 else {}

    def body(self, dialect: str, prompt: str, raw: str, tokens: int) -> dict:
        t = self.template
        body = {"model": self.model, "max_tokens": tokens, "stream": True}
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": raw}]
        else:
            body["prompt"] = prompt
        sampling = {"temperature": t.temperature, "top_p": t.top_p, "seed": t.seed} if t.do_sample else {"temperature": 0.0}
        if dialect in ("vllm", "vllm-usage"):
            body.update(sampling)
            if t.do_sample and t.top_k:
                body["top_k"] = t.top_k
            body["stream_options"] = {"include_usage": True, **({"continuous_usage_stats": True} if dialect == "vllm" else {})}
            if self.fixed:
                body.update(ignore_eos=True, min_tokens=tokens)
            if t.num_beams > 1:
                body.update(use_beam_search=True, best_of=t.num_beams, n=t.num_return_sequences,
                            length_penalty=t.length_penalty)
        elif dialect == "transformers":
            eos = list(self.job.ctx.models.eos_token_ids)
            generation = {"max_new_tokens": tokens, "do_sample": t.do_sample, "eos_token_id": eos,
                          "pad_token_id": self.job.ctx.models.pad_token_id}
            if self.fixed:
                generation["min_new_tokens"] = tokens
            if t.do_sample:
                generation.update(temperature=t.temperature, top_p=t.top_p, top_k=t.top_k)
                body["seed"] = t.seed
            body["generation_config"] = json.dumps(generation)
        else:
            body.update({k: v for k, v in sampling.items()})
            if dialect == "openai":
                body["stream_options"] = {"include_usage": True}
        return body

    async def negotiate(self) -> None:
        """The first request picks the dialect: the first one the server accepts (HTTP 200)."""
        first = self.job.items[0]
        tokens = min(first.output_tokens, 16)
        dialects = ("vllm", "vllm-usage") if self.template.num_beams > 1 else DIALECTS
        refusals = []
        for dialect in dialects:
            status, text, usage = await self.probe(self.body(dialect, first.text, first.raw, tokens))
            if status == 200:
                self.dialect = dialect
                break
            if status not in (400, 404, 415, 422):
                raise ServerFailed(f"the server answered HTTP {status} to a first request: {text[:300]}")
            refusals.append(f"{dialect}: HTTP {status} {text[:160]}")
        if self.dialect is None:
            if self.template.num_beams > 1:
                raise UnsupportedSetting(f"the server refused beam search (vLLM's use_beam_search): {refusals[0]}")
            raise ServerFailed("the server refused every request form: " + " | ".join(refusals))
        if self.dialect in ("openai", "plain") and self.fixed:
            self.notes.add("output length not fixed: the server takes neither ignore_eos/min_tokens nor a "
                           "generation_config, so requests may end at EOS before max_tokens")
        if self.fixed and usage and usage.get("completion_tokens") not in (None, tokens):
            self.notes.add(f"the first request returned {usage.get('completion_tokens')} of {tokens} tokens: "
                           "the server does not fix the output length")
        if self.dialect == "transformers":
            self.notes.add("fixed length through transformers serve's generation_config (min_new_tokens)")

    async def probe(self, body: dict) -> tuple[int, str, dict | None]:
        import httpx

        url = self.urls["chat" if self.api == "chat" else "completions"]
        usage = None
        try:
            async with self.client.stream("POST", url, json=body, headers=self.headers) as response:
                if response.status_code != 200:
                    return response.status_code, (await response.aread()).decode("utf-8", "replace"), None
                async for line in response.aiter_lines():
                    if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
                        try:
                            event = json.loads(line[5:])
                        except json.JSONDecodeError:
                            continue
                        if event.get("error"):
                            return 500, json.dumps(event["error"]), None
                        usage = event.get("usage") or usage
        except httpx.HTTPError as e:
            raise ServerFailed(f"cannot reach {url}: {type(e).__name__}: {e}") from None
        return 200, "", usage

    async def send(self, req, rec: RequestRecord, t0: float) -> None:
        import httpx

        url = self.urls["chat" if self.api == "chat" else "completions"]
        events: list[tuple[float, str, int | None]] = []
        usage = None
        try:
            async with self.client.stream("POST", url, json=self.body(self.dialect, req.text, req.raw, req.output_tokens),
                                          headers=self.headers) as response:
                if response.status_code != 200:
                    text = (await response.aread()).decode("utf-8", "replace")
                    rec.fail(f"HTTP {response.status_code}: {' '.join(text.split())[:300]}", time.perf_counter() - t0)
                    return
                async for line in response.aiter_lines():
                    now = time.perf_counter() - t0
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        event = json.loads(data)
                    except json.JSONDecodeError:
                        continue
                    if event.get("error"):
                        rec.fail(f"server error: {' '.join(json.dumps(event['error']).split())[:300]}", now)
                        return
                    usage = event.get("usage") or usage
                    text = content_of(event)
                    if text:
                        chunk_usage = (event.get("usage") or {}).get("completion_tokens")
                        events.append((now, text, chunk_usage))
        except httpx.HTTPError as e:
            rec.fail(f"{type(e).__name__}: {e}"[:300], time.perf_counter() - t0)
            return
        if not events:
            rec.fail("the stream carried no content", time.perf_counter() - t0)
            return
        self.streams[rec.request_id] = (events, usage)
        rec.first_token, rec.end = events[0][0], events[-1][0]
        rec.text = "".join(e[1] for e in events)
        rec.status = "ok"

    def token_counts(self, events, usage) -> list[int]:
        """Tokens in each event: the server's per-chunk usage if every event has it, else the tokenizer over the
        text so far, reconciled with the final usage (tokens that made no text, such as a skipped EOS, join
        the last event)."""
        cumulative = [e[2] for e in events]
        if all(c is not None for c in cumulative):
            counts = [b - a for a, b in zip([0] + cumulative[:-1], cumulative)]
            if all(c >= 0 for c in counts):
                return counts
        counts, text, before = [], "", 0
        for _, chunk, _ in events:
            text += chunk
            now = len(self.tokenizer(text, add_special_tokens=False).input_ids)
            counts.append(max(now - before, 1))
            before = max(now, before + 1)
        total = (usage or {}).get("completion_tokens")
        if isinstance(total, int) and total > 0 and total != sum(counts):
            if total > sum(counts):
                counts[-1] += total - sum(counts)
            else:
                excess = sum(counts) - total
                for i in sorted(range(len(counts)), key=lambda i: -counts[i]):
                    take = min(excess, counts[i] - 1)
                    counts[i] -= take
                    excess -= take
                    if not excess:
                        break
            self.notes.add("tokens per event counted with the tokenizer and reconciled with the server's usage")
        elif not isinstance(total, int):
            self.notes.add("tokens per event counted with the tokenizer (the server sent no usage)")
        return counts

    async def close(self, records) -> None:
        try:
            for rec in records:
                if rec.request_id in self.streams:
                    events, usage = self.streams[rec.request_id]
                    counts = self.token_counts(events, usage)
                    rec.token_times = spread_tokens([(t, n) for (t, _, _), n in zip(events, counts)])
                    rec.output_tokens = len(rec.token_times)
                    if self.fixed and rec.output_tokens != self.job.items[rec.request_id % len(self.job.items)].output_tokens:
                        self.notes.add("some requests returned another number of tokens than max_tokens")
            after = await self.read_counters() if self.counters else {}
            if after:
                delta = {k: after.get(k, 0.0) - self.counters.get(k, 0.0) for k in SPEC_COUNTERS}
                self.job.row.update(drafted_tokens=delta["drafted_tokens"], accepted_tokens=delta["accepted_tokens"])
                if delta["drafted_tokens"] > 0:
                    self.job.row["acceptance_rate"] = delta["accepted_tokens"] / delta["drafted_tokens"]
                self.notes.add("acceptance from the server's Prometheus counters, as deltas around the load")
        finally:
            await self.client.aclose()
        self.job.notes += sorted(self.notes)
        self.engine.check_alive(self.job.point.load.server)
