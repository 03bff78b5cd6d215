"""The one validated config object: the shared keys below, plus the keys each method, engine and scenario
declares in its registry entry (`options`).

Presets, --config files, CLI flags and the dashboard form all become a dict of these keys, and
`Config.from_dict` turns that into a Config or raises ConfigError with one line naming the key.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from decoding import METHODS, Settings
from decoding.method import with_options
from decoding.options import ConfigError, option
from engines import ENGINES
from models.variants import ATTENTIONS, DTYPES, QUANTIZATIONS
from scenarios import SCENARIOS

METHOD_NAMES = tuple(METHODS)
ENGINE_NAMES = tuple(ENGINES)
PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"
DEFAULT_PROMPTS = [
    "Explain how speculative decoding speeds up language model inference.",
    "Write a short story about a robot who learns to paint.",
    "List five practical tips for writing clean Python code.",
]


def choices_help(registry: dict) -> str:
    return "; ".join(f"{name}: {spec.help}" for name, spec in registry.items())


@dataclass
class Config:
    """One benchmark run's settings. The keys each method, engine and scenario declares are added below the class."""

    model: str = option("Qwen/Qwen3-4B", "target model: Hugging Face id, local folder, or tiny/target", "str", label="Target model")
    draft_model: str | None = option("Qwen/Qwen3-0.6B", "draft model for speculative decoding (same tokenizer as the target); null for none", "optstr", label="Draft model")
    methods: list = option(list(METHOD_NAMES), f"decoding methods to run ({choices_help(METHODS)})", "list[str]", choices=METHOD_NAMES, label="Methods")
    engine: list = option(["hf"], f"engine(s); a list compares them ({choices_help(ENGINES)})", "str|list[str]", choices=ENGINE_NAMES, label="Engine")
    prompts: list = option(DEFAULT_PROMPTS, "prompts, one string each", "list[str]", flag="prompt", exact=True,
                           repeats=True, blank="has an empty prompt: give every prompt some text", label="Prompts (one per line, or between lines of ---)")
    completions_per_prompt: object = option(1, "completions per prompt: one integer, or a list with one count per prompt", "int|list[int]", lo=1, hi=1000, flag="completions", repeats=True, label="Completions per prompt")
    prompt_length: int = option(0, "0 keeps prompts as written; N cuts or repeats each prompt to exactly N tokens", "int", lo=0, hi=131072, label="Prompt length (tokens)")
    chat_template: bool = option(True, "apply the tokenizer's chat template when it has one (thinking off for Qwen3)", "bool", label="Chat template")
    thinking: bool = option(False, "with chat_template: turn the model's reasoning on (Qwen3's enable_thinking); load rows then time the first answer token after </think> apart (ttfat_ms_*)", "bool", label="Thinking (reasoning models)")
    max_new_tokens: int = option(128, "new tokens per sequence", "int", lo=1, hi=32768, label="Max new tokens")
    stop_at_eos: bool = option(False, "let EOS end a sequence early (default: every method decodes exactly max_new_tokens)", "bool", label="Stop at EOS")
    temperature: float = option(0.7, "sampling temperature", "float", lo=1e-3, hi=10.0, label="Temperature")
    top_p: float = option(0.9, "nucleus mass (0 < top_p <= 1)", "float", lo=1e-9, hi=1.0, label="top-p")
    top_k: int = option(0, "top-k cut-off for sampling; 0 disables it", "int", lo=0, hi=1_000_000, label="top-k")
    num_beams: int = option(4, "beams for beam_search", "int", lo=1, hi=64, label="Beams")
    num_return_sequences: int = option(2, "sequences beam_search returns per prompt (at most num_beams)", "int", lo=1, hi=64, label="Returned sequences")
    length_penalty: float = option(1.0, "beam_search length penalty", "float", lo=-10.0, hi=10.0, label="Length penalty")
    early_stopping: bool = option(False, "beam_search stops once num_beams candidates are finished", "bool", label="Early stopping (beams)")
    batch_sizes: list = option([1, 4, 16], "batch sizes the batched method sweeps", "list[int]", lo=1, hi=4096, label="Batch sizes")
    batched_do_sample: bool = option(False, "batched samples (temperature, top_p, top_k) instead of greedy", "bool", label="Batched: sample")
    speculative_modes: list = option(["greedy"], "speculative decoding modes: greedy (lossless) and/or sampling", "list[str]", choices=("greedy", "sampling"), label="Speculative modes")
    num_draft_tokens: object = option(5, "k: tokens the draft proposes per target forward; a list sweeps k (one speculative row per mode and k)", "int|list[int]", lo=1, hi=64, label="Draft tokens k")
    prompt_lookup_num_tokens: int = option(10, "tokens prompt_lookup copies per match", "int", lo=1, hi=128, label="Prompt-lookup tokens")
    dtype: str = option("auto", "weights dtype (auto: bfloat16 on GPU, float32 on CPU)", "str", choices=DTYPES, label="dtype")
    quantization: list = option(["none"], "bitsandbytes quantization of the target; a list sweeps", "str|list[str]", choices=QUANTIZATIONS, label="Quantization")
    quantize_draft: bool = option(False, "quantize the draft model too", "bool", label="Quantize the draft")
    attention: list = option(["sdpa"], "attention implementation; a list sweeps", "str|list[str]", choices=ATTENTIONS, label="Attention")
    device: str = option("auto", "auto, cuda or cpu", "str", choices=("auto", "cuda", "cpu"), label="Device")
    random_weights: bool = option(False, "build models from their config with random weights (no weight download; acceptance figures meaningless)", "bool", label="Random weights")
    warmup: int = option(1, "warm-up calls per row, excluded from the figures", "int", lo=0, hi=100, label="Warm-up calls")
    repetitions: int = option(3, "measured repetitions of the whole workload per row (with target_ci 0)", "int", lo=1, hi=1000, label="Repetitions")
    target_ci: float = option(0.0, "0: exactly `repetitions`; > 0: adaptive, repeat until every row's 95% CI half-width of per-sequence tok/s is within this fraction of its median (0.05 = 5%)", "float", lo=0.0, hi=1.0, label="Target CI width")
    min_repetitions: int = option(3, "adaptive protocol (target_ci > 0): repetitions before the CI is first checked", "int", lo=2, hi=1000, label="Min repetitions (adaptive)")
    max_repetitions: int = option(20, "adaptive protocol (target_ci > 0): repetitions after which a row stops, narrow or not", "int", lo=2, hi=1000, label="Max repetitions (adaptive)")
    seed: int = option(0, "seed for sampling methods and random weights", "int", lo=0, hi=2**31 - 1, label="Seed")
    heldout_text: str | None = option(None, "text file the heldout_ppl column scores each variant's target on; null: a short bundled text", "optstr", label="Held-out text file")
    name: str | None = option(None, "a name for the run, shown in legends and pickers (History can rename it later)", "optstr", label="Run name")
    tags: str | None = option(None, "comma-separated tags for the run, e.g. fp16,baseline (History can change them later)", "optstr", label="Tags")
    run_notes: str | None = option(None, "free-text notes about the run, kept in every row of it", "optstr", label="Run notes")
    cost_per_hour: float = option(0.0, "price of the machine per hour, in `currency`; > 0 fills the cost_per_million_* columns (0: unset, empty cells)", "float", lo=0.0, hi=1e6, label="Machine cost per hour")
    currency: str = option("USD", "the currency of cost_per_hour and energy_price_per_kwh, as the cost columns name it (any text)", "str", label="Currency")
    energy_price_per_kwh: float = option(0.0, "price of a kWh, in `currency`; > 0 fills energy_cost_per_million_tokens where energy is measured (0: unset)", "float", lo=0.0, hi=1e4, label="Energy price per kWh")
    results: str = option("results/runs.csv", "CSV the rows are appended to; outputs.jsonl goes beside it", "str", label="Results CSV")

    @classmethod
    def from_dict(cls, data: dict, check_models: bool = True) -> "Config":
        if not isinstance(data, dict):
            raise ConfigError(f"config must be a JSON object of keys, got {type(data).__name__}")
        known = {f.name: f for f in fields(cls)}
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
                hint = f"did you mean {close[0]}? " if close else ""
                raise ConfigError(f"unknown config key '{key}': {hint}nothing was applied (allowed: {', '.join(known)})")
        values = {k: coerce(known[k], v) for k, v in data.items()}
        config = cls(**values)
        config.check(check_models)
        return config

    def check(self, check_models: bool = True) -> None:
        for f in fields(self):  # defaults go through the same rules
            setattr(self, f.name, coerce(f, getattr(self, f.name)))
        if not self.prompts:
            raise ConfigError("config key 'prompts' needs at least one prompt")
        if any(not p.strip() for p in self.prompts):
            raise ConfigError("config key 'prompts' has an empty prompt")
        if not self.methods:
            raise ConfigError(f"config key 'methods' needs at least one of: {', '.join(METHOD_NAMES)}")
        if isinstance(self.completions_per_prompt, list) and len(self.completions_per_prompt) != len(self.prompts):
            raise ConfigError(f"config key 'completions_per_prompt' has {len(self.completions_per_prompt)} counts "
                              f"for {len(self.prompts)} prompts: give one count per prompt, or a single integer")
        for name in self.methods:
            method = METHODS[name]
            if method.check and (problem := method.check(self)):
                raise ConfigError(problem)
            if method.needs_draft and not self.draft_model and not self.remote_only():
                raise ConfigError(f"config key 'draft_model' is needed by method '{name}': set a draft model or drop the method")
        if "flash_attention_2" in self.attention:
            from models.loading import flash_attn_available

            if not flash_attn_available():
                raise ConfigError("config key 'attention': flash_attention_2 needs the flash-attn package "
                                  "(pip install flash-attn --no-build-isolation, a CUDA source build); or use 'sdpa'")
        if self.target_ci and self.min_repetitions > self.max_repetitions:
            raise ConfigError(f"config key 'min_repetitions' ({self.min_repetitions}) must be at most "
                              f"max_repetitions ({self.max_repetitions})")
        if self.heldout_text and not Path(self.heldout_text).is_file():
            raise ConfigError(f"config key 'heldout_text': '{self.heldout_text}' is not a file; give a text file or null")
        if not str(self.results).endswith(".csv"):
            raise ConfigError(f"config key 'results' must be a path ending in .csv, got '{self.results}'")
        for name in self.engine:
            if ENGINES[name].compiles and self.warmup < 1:
                raise ConfigError(f"config key 'warmup' must be at least 1 with engine '{name}': its first call compiles, "
                                  "and compile time never belongs in the figures")
        from scenarios.workload import check_load

        if problem := check_load(self):
            raise ConfigError(problem)
        if check_models:  # imported here: --help and the form's first checks load no torch
            from models.devices import cuda_problem
            from models.loading import check_available, check_context
            from store.archive import check_results_file

            if problem := cuda_problem(self.device):
                raise ConfigError(problem)
            if problem := check_results_file(self.results):
                raise ConfigError(problem)
            check_writable(self.results)
            for key in ("model", "draft_model"):
                mid = getattr(self, key)
                if mid and key == "draft_model" and not self.needs_draft():
                    continue
                if mid and (why := check_available(mid, self.random_weights)):
                    raise ConfigError(f"config key '{key}': model '{mid}' cannot be found: {why}")
                if mid and (why := check_context(mid, self.random_weights, self.longest_prompt(mid),
                                                 self.max_new_tokens)):
                    raise ConfigError(why)
            if self.thinking and (why := self.thinking_problem()):
                raise ConfigError(why)

    def settings(self) -> Settings:
        return Settings(**{f.name: getattr(self, f.name) for f in fields(Settings)})

    def longest_prompt(self, model_id: str) -> int | None:
        """Tokens of the longest prompt as the run will send it (chat template included), from the model's
        tokenizer alone; None when the tokenizer cannot be read (the model check says why)."""
        if self.prompt_length:
            return self.prompt_length
        from models.loading import load_tokenizer
        from models.prompts import tokenize_prompts

        try:
            tokenizer, _ = load_tokenizer(model_id, self.random_weights)
        except Exception:
            return None
        return max(len(ids) for ids in tokenize_prompts(tokenizer, self))

    def thinking_problem(self) -> str | None:
        """Why `thinking` cannot take effect with this model's tokenizer, or None."""
        from metrics.thinking import THINK_END, think_end_id
        from models.loading import load_tokenizer

        try:
            tokenizer, _ = load_tokenizer(self.model, self.random_weights)
        except Exception:
            return None  # the model check says why
        if not self.chat_template or not getattr(tokenizer, "chat_template", None):
            return (f"config key 'thinking': {self.model} is run without a chat template, where thinking is switched "
                    "on; set chat_template true with a reasoning model (e.g. Qwen/Qwen3-4B), or thinking false")
        if think_end_id(tokenizer) is None:
            return (f"config key 'thinking': {self.model}'s tokenizer has no {THINK_END} token, so its reasoning "
                    "cannot be timed apart; use a reasoning model (e.g. Qwen/Qwen3-4B), or thinking false")
        return None

    def repetition_range(self) -> tuple[int, int]:
        """(fewest, most) measured repetitions per row."""
        return (self.min_repetitions, self.max_repetitions) if self.target_ci else (self.repetitions, self.repetitions)

    def completions(self) -> list[int]:
        c = self.completions_per_prompt
        return list(c) if isinstance(c, list) else [c] * len(self.prompts)

    def needs_draft(self) -> bool:
        return any(METHODS[m].needs_draft for m in self.methods) and not self.remote_only()

    def remote_only(self) -> bool:
        """Every engine is a server, which drafts on its own (its --speculative-config): no local draft is loaded,
        and a drafting method only names the rows."""
        return all(ENGINES[e].kind == "remote" for e in self.engine)

    def to_dict(self) -> dict:
        return asdict(self)


# Registry order: a method's keys, then an engine's, then a scenario's; their own help says which one they belong to.
Config = with_options(Config, [*METHODS.values(), *ENGINES.values(), *SCENARIOS.values()])


def check_writable(path: str) -> None:
    """Fail before any model loads, not after the first row was measured."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a"):
            pass
    except OSError as e:
        raise ConfigError(f"config key 'results': cannot write '{path}' ({e.strerror or e}); pick a writable .csv path")


def coerce(f, value):
    """One value checked against its field's kind and limits (decoding/options.py)."""
    return f.metadata["type"].coerce(f.name, value, f.metadata, empty_ok=default_of(f) == [])


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file '{path}' is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}")
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a JSON object of config keys")
    return data


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.json"))


def preset_path(name: str) -> Path:
    path = PRESETS_DIR / f"{name}.json"
    if not path.is_file():
        raise ConfigError(f"unknown preset '{name}' (available: {', '.join(preset_names())})")
    return path


def default_of(f) -> object:
    """A field's default, whether a plain value or a factory (lists)."""
    return f.default_factory() if callable(f.default_factory) else f.default


def field_help() -> dict[str, tuple[str, str]]:
    """key -> (help, allowed values), for --help, the README and the dashboard."""
    return {f.name: (f.metadata["help"], f.metadata["type"].describe(f.metadata["choices"], f.metadata["lo"],
                                                                     f.metadata["hi"])) for f in fields(Config)}
