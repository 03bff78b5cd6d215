"""The `continuous` engine: transformers' continuous batching (paged attention, requests joining and leaving the
running batch at every step), in process, driven by the load scenario.

Each request is added to the manager at its arrival time (`add_request`) and its result comes back through a
result handler on the event loop; the per-token timestamps transformers records (`record_timestamps`, on the
same perf_counter clock as the load generator) give TTFT and inter-token latency, and the time it waited
before being scheduled is its queue time.

The KV cache is sized explicitly (`cb_num_blocks` x `cb_block_size` tokens): left to itself transformers sizes
it from free memory, and on the CPU that is 60% of RAM, allocated before the first token.
Prefix sharing is an option (`cb_prefix_sharing`, off by default): a workload of repeated prompts would give
continuous batching an advantage the static-batching baseline cannot have, while multi-turn sessions and shared
prefixes are where a user wants to see it at work.

transformers 5.0 took the cache settings on the GenerationConfig; later 5.x versions take a
ContinuousBatchingConfig, whose `block_size` became `page_size` after 5.17: block_size_key reads which it has.
"""
from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import time

from decoding.types import UnsupportedSetting
from metrics.serving import RequestRecord
from metrics.thinking import split_reasoning, think_end_id


def block_size_key(fields: set[str]) -> str:
    """The name this transformers' ContinuousBatchingConfig gives the tokens per cache block: `block_size` (still in
    5.17), later `page_size`. Read from its fields, never guessed from the version: a key it lacks would be dropped
    and the configured cache size silently ignored."""
    for key in ("page_size", "block_size"):
        if key in fields:
            return key
    raise UnsupportedSetting("continuous engine: this transformers' ContinuousBatchingConfig has neither page_size "
                             "nor block_size, so cb_block_size cannot be set; use transformers 5.24")


def manager_for(model, generation, *, num_blocks: int, block_size: int, max_batch_tokens: int,
                max_requests: int, seed: int, prefix_sharing: bool = False):
    """A ContinuousBatchingManager with an explicit cache, in the words of the installed transformers."""
    settings = dict(num_blocks=num_blocks, max_batch_tokens=max_batch_tokens, max_requests_per_batch=max_requests,
                    allow_block_sharing=prefix_sharing, seed=seed)
    try:
        from transformers.generation.configuration_utils import ContinuousBatchingConfig
    except ImportError:  # 5.0: the cache settings ride on the generation config
        settings["block_size"] = block_size
        for key in ("num_blocks", "block_size", "max_batch_tokens"):
            setattr(generation, key, settings.get(key))
        return model.init_continuous_batching(generation_config=generation)
    known = {f.name for f in dataclasses.fields(ContinuousBatchingConfig)}
    settings[block_size_key(known)] = block_size
    config = ContinuousBatchingConfig(**{k: v for k, v in settings.items() if k in known})
    return model.init_continuous_batching(generation_config=generation, continuous_batching_config=config)


class ContinuousEngine:
    name = "continuous"

    def __init__(self, models, cb_num_blocks: int = 256, cb_block_size: int = 32, cb_prefix_sharing: bool = False):
        self.models = models
        self.num_blocks, self.block_size = cb_num_blocks, cb_block_size  # its config keys (engines/__init__.py)
        self.prefix_sharing = cb_prefix_sharing

    def generate(self, request, probe):
        raise UnsupportedSetting("engine 'continuous' runs under the load scenario: set concurrency or request_rate")

    def session(self, job, template) -> "ContinuousSession":
        if template.use_draft or template.prompt_lookup_num_tokens or template.num_beams > 1 or template.logits_options:
            raise UnsupportedSetting(f"continuous batching in transformers runs greedy and sampling requests only, "
                                     f"not {job.point.method}")
        return ContinuousSession(self, job, template)


class ContinuousSession:
    def __init__(self, engine: ContinuousEngine, job, template):
        self.engine, self.job, self.template = engine, job, template
        self.models, self.config = job.ctx.models, job.ctx.config
        self.manager = None
        self.ids = itertools.count()
        self.timestamps = "record_timestamps" in inspect.signature(_add_request()).parameters

    async def start(self) -> None:
        from transformers import GenerationConfig

        t, m, config = self.template, self.models, self.config
        # Forced length: EOS is disabled outright (the manager has no min_new_tokens), so a text may differ from
        # generate's after a point where the model chose EOS; the token count is the same.
        eos = -1 if t.min_new_tokens >= t.max_new_tokens else list(m.eos_token_ids)
        self.eos = eos
        generation = GenerationConfig(max_new_tokens=t.max_new_tokens, do_sample=t.do_sample, eos_token_id=eos,
                                      pad_token_id=m.pad_token_id,
                                      **(dict(temperature=t.temperature, top_p=t.top_p, top_k=t.top_k) if t.do_sample
                                         else {}))
        offered = getattr(self.job, "offered", None)  # sessions: a later turn's history is longer than any first turn
        longest = max([len(item.ids) for item in self.job.items] + [offered.longest if offered else 0])
        self.manager = manager_for(m.target, generation, num_blocks=self.engine.num_blocks,
                                   block_size=self.engine.block_size,
                                   max_batch_tokens=max(512, longest + config.max_batch_size),
                                   max_requests=config.max_batch_size, seed=t.seed,
                                   prefix_sharing=self.engine.prefix_sharing)
        if hasattr(self.manager, "warmup"):
            await asyncio.to_thread(self.manager.warmup)
        self.manager.start()

    async def send(self, req, rec: RequestRecord, t0: float) -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        stamps: list[float] = []
        request_id = f"load-{next(self.ids)}"

        def on_result(output):
            if not self.timestamps:  # older transformers: stamp each streamed output as it is delivered
                stamps.append(time.perf_counter())
            if output.is_finished() and not done.done():
                done.set_result(output)

        self.manager.register_result_handler(request_id, on_result)
        extra = {"record_timestamps": True} if self.timestamps else {"streaming": True}
        self.manager.add_request(req.ids, request_id=request_id, max_new_tokens=req.output_tokens,
                                 eos_token_id=self.eos, **extra)
        try:
            output = await asyncio.wait_for(done, timeout=self.config.request_timeout_s)
        except asyncio.TimeoutError:
            rec.fail(f"no result after {self.config.request_timeout_s:g} s (request_timeout_s)", time.perf_counter() - t0)
            return
        if output.error:
            rec.fail(f"continuous batching: {output.error}"[:300], time.perf_counter() - t0)
            return
        times = list(output.timestamps or []) if self.timestamps else stamps
        tokens = list(output.generated_tokens)
        if not tokens or len(times) < len(tokens):
            rec.fail(f"continuous batching returned {len(tokens)} tokens with {len(times)} timestamps",
                     time.perf_counter() - t0)
            return
        rec.token_times = [x - t0 for x in times[:len(tokens)]]
        rec.first_token, rec.end = rec.token_times[0], rec.token_times[-1]
        if output.lifespan and output.lifespan[0] > 0:
            rec.queue = output.lifespan[0] - output.created_time
        rec.output_tokens = len(tokens)
        rec.text = self.models.tokenizer.decode(tokens, skip_special_tokens=True)
        rec.status = "ok"
        if self.config.thinking:  # the first answer token after </think>, timed apart
            split_reasoning(rec, tokens, think_end_id(self.models.tokenizer))

    async def close(self, records) -> None:
        if self.manager is not None:
            manager, self.manager = self.manager, None
            await asyncio.to_thread(manager.stop, block=True, timeout=30)
            if hasattr(manager, "destroy"):
                manager.destroy()


def _add_request():
    from transformers.generation.continuous_batching.continuous_api import ContinuousBatchingManager

    return ContinuousBatchingManager.add_request
