"""What one load point offers, built from the config and the run's tokenizer before its clock starts: the distinct
requests a load cycles through (the config's prompts, a dataset's first turns, synthetic prompts) or the sessions
it plays (scenarios/sessions.py), and the lines that did not fit the model's context.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

from models.prompts import tokenize_prompts
from scenarios.context import ScenarioContext
from scenarios.datasets import MAX_OUTPUT, Conversation, read_conversations
from scenarios.sender import LoadRequest
from scenarios.sessions import Session, render
from scenarios.synthetic import random_prompts, shared_prefix_prompts
from scenarios.workload import DEFAULT_INPUT_TOKENS, Load


@dataclass
class Offered:
    items: list[LoadRequest]  # first turns too, for sessions (the warm-up and the method's template use them)
    sessions: list[Session] | None = None
    skipped: int = 0  # dataset lines longer than the context, skipped (too_long: skip)
    context: int | None = None
    notes: list[str] = field(default_factory=list)
    longest: int = 0  # the longest prompt it can send (sessions: the whole history of the longest one)


def context_length(ctx: ScenarioContext) -> int | None:
    """The target's context (max_position_embeddings), from the loaded model or its config; None when unknown."""
    target = getattr(ctx.models, "target", None)
    config = getattr(target, "config", None)
    if config is None:
        try:
            from models.loading import load_config

            config = load_config(ctx.config.model)
        except Exception:
            return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(text, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


def output_tokens(tok, turn, config) -> int:
    if turn.output_tokens:
        return turn.output_tokens
    if turn.reply:  # ShareGPT: the dataset's answer says how long this turn's answer is
        return max(1, min(MAX_OUTPUT, len(tok(turn.reply, add_special_tokens=False).input_ids)))
    return config.max_new_tokens


def request(tok, index: int, ids: list[int], raw, output: int) -> LoadRequest:
    return LoadRequest(index, list(ids), tok.decode(ids, skip_special_tokens=False), raw, output)


def prompt_items(ctx: ScenarioContext) -> list[LoadRequest]:
    """The config's prompts, each as many times as it has completions."""
    config, tok = ctx.config, ctx.models.tokenizer
    out = []
    for p, n in enumerate(config.completions()):
        ids = list(ctx.prompts[p])
        plain = tok(config.prompts[p]).input_ids == ids
        # The in-process prompt as text: a template or a cut is sent as the tokens it produced.
        text = config.prompts[p] if plain else tok.decode(ids, skip_special_tokens=False)
        out += [LoadRequest(p, ids, text, config.prompts[p], config.max_new_tokens)] * n
    return out


def fits(offered: Offered, config, where: Conversation, tokens: int) -> bool:
    if offered.context is None or tokens <= offered.context:
        return True
    if config.too_long == "refuse":
        raise ValueError(f"config key 'too_long' is refuse: line {where.line} of '{config.dataset}' needs {tokens} "
                         f"tokens with its answer, beyond the model's context of {offered.context}; set too_long "
                         f"to skip, or shorten the line")
    offered.skipped += 1
    return False


def dataset_items(ctx: ScenarioContext, offered: Offered, conversations: list[Conversation]) -> list[LoadRequest]:
    """Each conversation's first turn, as the tokenizer and template of the run render it."""
    config, tok = ctx.config, ctx.models.tokenizer
    texts = [c.turns[0].user for c in conversations]
    rendered = tokenize_prompts(tok, SimpleNamespace(prompts=texts, chat_template=config.chat_template,
                                                     thinking=config.thinking, prompt_length=config.prompt_length))
    out = []
    for n, (conv, ids) in enumerate(zip(conversations, rendered)):
        output = output_tokens(tok, conv.turns[0], config)
        if fits(offered, config, conv, len(ids) + output):
            plain = tok(texts[n]).input_ids == list(ids)
            out.append(LoadRequest(n, list(ids), texts[n] if plain else tok.decode(ids, skip_special_tokens=False),
                                   texts[n], output))
    return out


def session_list(ctx: ScenarioContext, offered: Offered, conversations: list[Conversation] | None) -> list[Session]:
    """The dataset's conversations (up to session_turns turns each), or sessions made of the config's prompts:
    session s asks prompt s, then the ones after it, session_turns turns in all."""
    config, tok = ctx.config, ctx.models.tokenizer
    if conversations is None:
        prompts, turns = list(config.prompts), config.session_turns or 1
        return [Session(s, None, [(prompts[(s + k) % len(prompts)], config.max_new_tokens) for k in range(turns)])
                for s in range(len(prompts))]
    out = []
    for n, conv in enumerate(conversations):
        turns = conv.turns[:config.session_turns] if config.session_turns else conv.turns
        first = render(tok, config, ([{"role": "system", "content": conv.system}] if conv.system else [])
                       + [{"role": "user", "content": turns[0].user}])
        if fits(offered, config, conv, len(first) + output_tokens(tok, turns[0], config)):
            out.append(Session(n, conv.system, [(t.user, output_tokens(tok, t, config)) for t in turns]))
    return out


def first_turn(tok, config, s: Session) -> LoadRequest:
    messages = ([{"role": "system", "content": s.system}] if s.system else []) + [{"role": "user", "content": s.turns[0][0]}]
    ids = render(tok, config, messages)
    return LoadRequest(s.index, ids, tok.decode(ids, skip_special_tokens=False), messages, s.turns[0][1])


def offered(ctx: ScenarioContext, load: Load) -> Offered:
    config, tok = ctx.config, ctx.models.tokenizer
    out = Offered([], context=context_length(ctx))
    kind = config.workload
    if kind == "random":
        length = load.input_tokens or DEFAULT_INPUT_TOKENS
        count = config.num_requests or max(len(config.prompts), 16)
        prompts = random_prompts(tok, count, length, config.input_distribution, config.input_spread, config.seed)
        out.items = [request(tok, n, ids, text, config.max_new_tokens) for n, (ids, text) in enumerate(prompts)]
    elif kind == "shared_prefix":
        prompts = shared_prefix_prompts(tok, config.prefix_groups, config.prefix_questions, config.prefix_tokens,
                                        load.input_tokens or DEFAULT_INPUT_TOKENS, config.seed)
        out.items = [request(tok, n, ids, text, config.max_new_tokens) for n, (_, ids, text) in enumerate(prompts)]
    else:
        conversations = read_conversations(config.dataset) if config.dataset else None
        if kind == "sessions":
            out.sessions = session_list(ctx, out, conversations)
            if not out.sessions:
                raise ValueError(f"config key 'dataset': no session of '{config.dataset}' fits the model's context "
                                 f"of {out.context} tokens")
            out.items = [first_turn(tok, config, s) for s in out.sessions]
            out.longest = max(len(tok(" ".join(u for u, _ in s.turns)).input_ids) + sum(o for _, o in s.turns)
                              + 16 * len(s.turns) for s in out.sessions)  # the whole history, template slack included
        elif conversations is not None:
            out.items = dataset_items(ctx, out, conversations)
        else:
            out.items = prompt_items(ctx)
    if not out.items:
        raise ValueError(f"config key 'dataset': no line of '{config.dataset}' fits the model's context of "
                         f"{out.context} tokens")
    out.longest = max([out.longest] + [len(i.ids) for i in out.items])
    if out.skipped:
        unit = ("session" if kind == "sessions" else "dataset line") + ("s" if out.skipped > 1 else "")
        out.notes.append(f"{out.skipped} {unit} longer than the model's context of {out.context} tokens skipped "
                         "(too_long: skip)")
    return out
