"""The requests of one load row against an OpenAI-compatible endpoint, over HTTP.

Each request streams (SSE) and every event is stamped on arrival with the client's clock (engines/server/stream.py):
- TTFT ends at the first event carrying content (or reasoning content), never at a role-only event; where the
  server streams reasoning apart, the first answer token is timed too (ttfat);
- tokens per event come from the server's own usage figures when it sends them with every chunk (vLLM's
  continuous_usage_stats), else from the run's tokenizer over the text so far; the final usage is the truth, and
  tokens no event carried get the stream's end as their time;
- requests.jsonl keeps each event's time and token count; ITL is reported per token and per event.

What a request asks for is read off the Request the method builds (scenarios/load.py): temperature 0 for
greedy, temperature/top_p/top_k for sampling, vLLM's beam search for beams (non-streaming, as vLLM runs it: e2e
and rates only). Drafting is configured when the server is started, so such rows send plain requests; what the
server drafted (method, k, counts, τ, by position) comes from its command and its /metrics deltas
(metrics/server_metrics.py), with its queue, TTFT, ITL, e2e, prefix-cache, preemption and KV-cache figures.

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
from engines.server.stream import Stream, count_tokens, read_stream
from metrics.server_metrics import NAN, Snapshot, kv_usage, server_figures
from metrics.serving import RequestRecord, spread_tokens
from metrics.stats import median
from metrics.stream_figures import offered_rate

DIALECTS = ("vllm", "vllm-usage", "transformers", "openai", "plain")
KV_SAMPLE_S = 0.5  # how often the KV-cache gauge is read during a load


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
        self.streams: dict[int, Stream] = {}
        self.beams: dict[int, list[str]] = {}  # request id -> the kept beams' texts
        self.notes: set[str] = set()
        self.before: Snapshot | None = None
        self.kv_peak, self.sampler = NAN, None
        key = os.environ.get(engine.api_key_env or "", "")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    @property
    def fixed(self) -> bool:
        return self.template.min_new_tokens >= self.template.max_new_tokens

    @property
    def beam(self) -> bool:
        return self.template.num_beams > 1

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
            await self.negotiate()
        except BaseException:
            await self.client.aclose()
            raise

    async def begin(self) -> None:
        """After the warm-up: the /metrics the load's deltas start from, and the KV-cache sampler."""
        self.before = await self.read_metrics()
        if self.before is not None and self.before.kind:
            self.sampler = asyncio.create_task(self.sample_kv())

    async def read_metrics(self) -> Snapshot | None:
        try:
            response = await self.client.get(self.urls["metrics"], headers=self.headers, timeout=10)
        except Exception:
            return None
        return Snapshot.of(response.text) if response.status_code == 200 else None

    async def sample_kv(self) -> None:
        wait = KV_SAMPLE_S / 5  # a first look soon after the load starts, so a short load gets a sample too
        while True:
            await asyncio.sleep(wait)
            wait = KV_SAMPLE_S
            try:
                response = await self.client.get(self.urls["metrics"], headers=self.headers, timeout=10)
            except Exception:
                continue
            usage = kv_usage(response.text) if response.status_code == 200 else NAN
            if usage == usage and not usage <= self.kv_peak:
                self.kv_peak = usage

    def body(self, dialect: str, prompt: str, raw: str, tokens: int) -> dict:
        t = self.template
        body = {"model": self.model, "max_tokens": tokens, "stream": not self.beam}
        if self.api == "chat":
            body["messages"] = raw if isinstance(raw, list) else [{"role": "user", "content": raw}]  # a session: its history
        else:
            body["prompt"] = prompt
        sampling = {"temperature": t.temperature, "top_p": t.top_p, "seed": t.seed} if t.do_sample else {"temperature": 0.0}
        if dialect in ("vllm", "vllm-usage"):
            body.update(sampling)
            if t.do_sample and t.top_k:
                body["top_k"] = t.top_k
            if not self.beam:
                body["stream_options"] = {"include_usage": True,
                                          **({"continuous_usage_stats": True} if dialect == "vllm" else {})}
            if self.fixed:
                body.update(ignore_eos=True, min_tokens=tokens)
            if self.api == "chat":  # Qwen3's template reasons unless told; the run's `thinking` says which
                body["chat_template_kwargs"] = {"enable_thinking": bool(getattr(self.config, "thinking", False))}
            if self.beam:  # vLLM's beam width is n; it refuses beam search on a stream
                body.update(use_beam_search=True, n=t.num_beams, length_penalty=t.length_penalty, return_token_ids=True)
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
        dialects = ("vllm",) if self.beam else DIALECTS
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
            if self.beam:
                raise UnsupportedSetting(f"the server refused beam search (vLLM's use_beam_search): {refusals[0]}")
            raise ServerFailed("the server refused every request form: " + " | ".join(refusals))
        if self.dialect in ("openai", "plain") and self.fixed:
            self.notes.add("output length not fixed: the server takes neither ignore_eos/min_tokens nor a "
                           "generation_config, so requests may end at EOS before max_tokens")
        if self.fixed and not self.beam and usage and usage.get("completion_tokens") not in (None, tokens):
            self.notes.add(f"the first request returned {usage.get('completion_tokens')} of {tokens} tokens: "
                           "the server does not fix the output length")
        if self.dialect == "transformers":
            self.notes.add("fixed length through transformers serve's generation_config (min_new_tokens)")
        if self.beam:
            self.notes.add(f"beam search as vLLM runs it: non-streaming, beam width n={self.template.num_beams}, the "
                           f"top {self.template.num_return_sequences} kept; TTFT, TPOT and ITL stay empty (no stream), "
                           "e2e and rates count the kept beams' tokens")

    async def probe(self, body: dict) -> tuple[int, str, dict | None]:
        import httpx

        url = self.urls["chat" if self.api == "chat" else "completions"]
        try:
            if not body["stream"]:
                response = await self.client.post(url, json=body, headers=self.headers)
                if response.status_code != 200:
                    return response.status_code, response.text, None
                return 200, "", response.json().get("usage")
            async with self.client.stream("POST", url, json=body, headers=self.headers) as response:
                if response.status_code != 200:
                    return response.status_code, (await response.aread()).decode("utf-8", "replace"), None
                stream = await read_stream(response, time.perf_counter())
                if stream.error:
                    return 500, stream.error, None
                return 200, "", stream.usage
        except httpx.HTTPError as e:
            raise ServerFailed(f"cannot reach {url}: {type(e).__name__}: {e}") from None

    async def send(self, req, rec: RequestRecord, t0: float) -> None:
        import httpx

        url = self.urls["chat" if self.api == "chat" else "completions"]
        body = self.body(self.dialect, req.text, req.raw, req.output_tokens)
        try:
            if self.beam:
                return await self.send_beam(url, body, rec, t0)
            async with self.client.stream("POST", url, json=body, headers=self.headers) as response:
                if response.status_code != 200:
                    text = (await response.aread()).decode("utf-8", "replace")
                    rec.fail(f"HTTP {response.status_code}: {' '.join(text.split())[:300]}", time.perf_counter() - t0)
                    return
                stream = await read_stream(response, t0)
        except httpx.HTTPError as e:
            rec.fail(f"{type(e).__name__}: {e}"[:300], time.perf_counter() - t0)
            return
        if stream.error:
            rec.fail(stream.error, stream.end)
            return
        if not stream.events:
            rec.fail("the stream carried no content", time.perf_counter() - t0)
            return
        self.streams[rec.request_id] = stream
        rec.first_token, rec.end = stream.events[0].at, stream.events[-1].at
        rec.text = "".join(e.text for e in stream.events if not e.reasoning)
        rec.status = "ok"

    async def send_beam(self, url: str, body: dict, rec: RequestRecord, t0: float) -> None:
        response = await self.client.post(url, json=body, headers=self.headers)
        now = time.perf_counter() - t0
        if response.status_code != 200:
            rec.fail(f"HTTP {response.status_code}: {' '.join(response.text.split())[:300]}", now)
            return
        choices = response.json().get("choices") or []
        if not choices:
            rec.fail("the response carried no choices", now)
            return
        kept = choices[:self.template.num_return_sequences]  # vLLM returns the beams best first
        self.beams[rec.request_id] = [c.get("token_ids") or self.text_of(c) for c in kept]
        rec.server = {"beams_returned": len(choices), "beams_kept": len(kept)}
        rec.end, rec.text, rec.status = now, self.text_of(choices[0]), "ok"

    @staticmethod
    def text_of(choice: dict) -> str:
        return choice.get("text") if "text" in choice else (choice.get("message") or {}).get("content") or ""

    def finish_record(self, rec: RequestRecord) -> None:
        """Tokens, token times, events, reasoning and the server's own figures of one finished request."""
        if rec.request_id in self.beams:
            kept = self.beams[rec.request_id]
            # The server's token ids where it returns them; else the text re-tokenized.
            rec.output_tokens = sum(len(b) if isinstance(b, list) else
                                    len(self.tokenizer(b, add_special_tokens=False).input_ids) for b in kept)
            return
        stream = self.streams.get(rec.request_id)
        if stream is None:
            return
        counts = count_tokens(stream.events, stream.usage, self.tokenizer, self.notes)
        events = [(e.at, n) for e, n in zip(stream.events, counts)]
        if len(counts) > len(stream.events):  # tokens the final usage counts and no event carried
            events.append((stream.end if stream.end == stream.end else stream.events[-1].at, counts[-1]))
            rec.end = events[-1][0]
            self.notes.add("tokens the server counted but streamed no text for (an incomplete UTF-8 piece held "
                           "back, a skipped EOS) reconciled with the final usage, timed at the stream's end")
        rec.events = [[round(at, 6), n] for at, n in events]
        rec.token_times = spread_tokens(events)
        rec.output_tokens = len(rec.token_times)
        reasoning = [n for e, n in zip(stream.events, counts) if e.reasoning]
        if reasoning:
            rec.reasoning_tokens = sum(reasoning)
            # A request that never left its reasoning has no answer token (NaN), as in process (metrics/thinking.py).
            rec.first_answer = next((e.at for e in stream.events if not e.reasoning), NAN)
        else:
            rec.first_answer = rec.first_token
        if stream.metrics:
            rec.server = {k: v for k, v in stream.metrics.items() if v is not None}
            if isinstance(q := rec.server.get("queue_time_ms"), (int, float)):
                rec.queue = q / 1000

    async def close(self, records) -> None:
        if self.sampler is not None:
            self.sampler.cancel()
        row = self.job.row
        try:
            for rec in records:
                if rec.status == "ok":
                    self.finish_record(rec)
                    want = self.job.items[rec.request_id % len(self.job.items)].output_tokens
                    if self.fixed and not self.beam and rec.output_tokens != want:
                        self.notes.add("some requests returned another number of tokens than max_tokens")
            after = await self.read_metrics() if self.before is not None else None
            if after is not None:
                row.update(server_figures(self.before, after, self.kv_peak))
                if any(isinstance(v, (int, float)) and v > 0 for v in (row.get("drafted_tokens"), row.get("server_drafts"))):
                    self.notes.add("acceptance from the server's /metrics counters, as deltas around the load")
        finally:
            await self.client.aclose()
        self.label_drafting(row)
        self.server_timing(row, records)
        if self.job.point.load.rate:
            row["offered_request_rate"] = offered_rate(records)
        self.job.notes += sorted(self.notes)
        self.engine.check_alive(self.job.point.load.server)

    def label_drafting(self, row: dict) -> None:
        """The row says what the server drafted: method and k from its command, k also from its counters."""
        index = self.job.point.load.server
        row["server_command_run"] = self.engine.commands.get(index, "") if index >= 0 else ""
        spec = self.engine.drafting.get(index, {}) if index >= 0 else {}
        k = spec.get("k") or row.get("server_k")
        if spec or (isinstance(k, (int, float)) and k == k):
            row["server_spec_method"] = spec.get("method", "") or "unknown"
            row["server_k"] = k
            row["num_draft_tokens"] = k
            row["draft_model"] = spec.get("draft_model") or spec.get("method", "")
        elif self.template.use_draft or self.template.prompt_lookup_num_tokens:
            row["num_draft_tokens"], row["draft_model"] = "", ""
            self.notes.add("the server drafts nothing that it reports (no --speculative-config in server_command, "
                           "no drafting counters): this row measured plain decoding under a drafting method's name")

    def server_timing(self, row: dict, records) -> None:
        """client_ttft_overhead_ms: client TTFT minus the server's arrival-to-first-token, per request where the
        server sends it (vLLM's time_to_first_token_ms starts when the request is scheduled: queue added)."""
        pairs, server = [], []
        for r in records:
            s = r.server or {}
            if r.status == "ok" and isinstance(s.get("time_to_first_token_ms"), (int, float)):
                server.append(s["time_to_first_token_ms"] + (s.get("queue_time_ms") or 0.0))
                pairs.append((r.first_token - r.sent) * 1000 - server[-1])
        if pairs:
            row["client_ttft_overhead_ms"], row["server_ttft_ms_median"] = median(pairs), median(server)
        elif row.get("server_ttft_ms_mean", NAN) == row.get("server_ttft_ms_mean", NAN):
            client = [(r.first_token - r.sent) * 1000 for r in records if r.status == "ok"]
            if client:
                row["client_ttft_overhead_ms"] = sum(client) / len(client) - row["server_ttft_ms_mean"]
                self.notes.add("client_ttft_overhead_ms from means (the server sent no per-request figures; vLLM: "
                               "--enable-per-request-metrics)")
