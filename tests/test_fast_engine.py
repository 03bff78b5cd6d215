"""The `fast` engine on the CPU (float32, no compile): token-for-token equal to the `hf` engine where decoding is
greedy, and distribution-exact where it samples. Nothing here times anything."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import dataclasses  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from scipy.stats import chi2  # noqa: E402

from decoding import METHODS  # noqa: E402
from decoding import Settings  # noqa: E402
from decoding.types import Generation, NullProbe, Request, UnsupportedSetting  # noqa: E402
from engines.fast import FastEngine  # noqa: E402
from engines.fast.loops import prompt_lookup_candidates  # noqa: E402
from engines.fast.sampling import rejection_accept  # noqa: E402
from decoding.types import count_new_tokens  # noqa: E402
from engines.hf import HFEngine  # noqa: E402

S = Settings(max_new_tokens=24)
ALPHA = 0.001  # chi-square goodness of fit: the test fails when p-value < 0.001 (statistic > chi2.ppf(0.999, df))


def run(method, engine, inputs, settings=S):
    return METHODS[method](inputs, settings, engine, NullProbe())


@pytest.fixture(scope="module")
def fast(tiny_models):
    return FastEngine(tiny_models)


@pytest.fixture(scope="module")
def hf(tiny_models):
    return HFEngine(tiny_models)


def check_shape(g: Generation, models):
    """New tokens only, right-padded with pad after the first EOS, counted up to and including it."""
    assert g.engine == "fast"
    assert g.new_tokens == count_new_tokens(g.sequences, models.eos_token_ids)
    for row, n in zip(g.sequences, g.new_tokens):
        assert (row[n:] == models.pad_token_id).all()


# -- greedy: equal to the hf engine ------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", [0, 1, 2])
def test_standard_greedy_equals_hf(tiny_models, inputs, fast, hf, prompt):
    x = inputs([prompt])
    ours, ref = run("standard", fast, x), run("standard", hf, x)
    assert torch.equal(ours.sequences, ref.sequences)
    assert ours.new_tokens == ref.new_tokens == [S.max_new_tokens]
    check_shape(ours, tiny_models)


def test_batched_left_padded_greedy_equals_hf(tiny_models, inputs, fast, hf):
    x = inputs([0, 1, 2])
    assert len(set(x.attention_mask.sum(1).tolist())) == 3  # mixed lengths: padding through position ids and mask
    ours = run("batched", fast, x)
    assert torch.equal(ours.sequences, run("batched", hf, x).sequences)
    # And every row equals the same prompt decoded alone: padding changes nothing.
    for row, prompt in enumerate([0, 1, 2]):
        assert torch.equal(ours.sequences[row], run("standard", fast, inputs([prompt])).sequences[0])


@pytest.mark.parametrize("prompt", [1, 2])
def test_prompt_lookup_greedy_equals_hf(tiny_models, inputs, fast, hf, prompt):
    x = inputs([prompt])
    ours = run("prompt_lookup", fast, x)
    assert torch.equal(ours.sequences, run("prompt_lookup", hf, x).sequences)
    assert 0 <= ours.drafts.accepted <= ours.drafts.drafted
    if prompt == 1:  # a prompt with repeated n-grams: lookup really drafts and verifies
        assert ours.drafts.drafted > 0 and ours.drafts.rounds > 0


def eos_models(models, inputs, index):
    """The tiny models with EOS redefined as the token greedy decoding of prompt 1 emits at `index`, so EOS really
    occurs; and how many tokens that run then has (up to the first occurrence of that token)."""
    seq = run("standard", FastEngine(models), inputs([1])).sequences[0].tolist()
    return dataclasses.replace(models, eos_token_ids=(seq[index],)), seq.index(seq[index]) + 1


@pytest.mark.parametrize("min_new", [0, 6])
def test_stopping_at_eos_and_min_new_tokens_equal_hf(tiny_models, inputs, min_new):
    models, stop = eos_models(tiny_models, inputs, 3)
    fast, hf = FastEngine(models), HFEngine(models)
    for rows in ([1], [0, 1, 2]):
        x = inputs(rows)
        request = Request(x.input_ids, x.attention_mask, max_new_tokens=20, min_new_tokens=min_new)
        ours, ref = fast.generate(request, NullProbe()), hf.generate(request, NullProbe())
        assert torch.equal(ours.sequences, ref.sequences), rows
        assert ours.new_tokens == ref.new_tokens
        check_shape(ours, models)
    if min_new == 0:
        assert ours.new_tokens[1] == stop  # the row of prompt 1 stops at its EOS, the others run on


def test_speculative_and_lookup_stop_at_eos_like_standard(tiny_models, inputs):
    models, stop = eos_models(tiny_models, inputs, 5)
    fast = FastEngine(models)
    x = inputs([1])
    settings = dataclasses.replace(S, stop_at_eos=True, num_draft_tokens=3)
    standard = run("standard", fast, x, settings)
    assert standard.new_tokens == [stop] and standard.sequences.shape == (1, stop)
    for method in ("speculative", "prompt_lookup"):
        g = run(method, fast, x, settings)
        assert torch.equal(g.sequences, standard.sequences), method
        assert g.new_tokens == [stop]


# -- speculative decoding: lossless, counted, cropped -------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("prompt", [0, 1])
def test_speculative_greedy_equals_standard(tiny_models, inputs, fast, k, prompt):
    x = inputs([prompt])
    settings = dataclasses.replace(S, num_draft_tokens=k)
    spec = run("speculative", fast, x, settings)
    assert torch.equal(spec.sequences, run("standard", fast, x).sequences)
    assert spec.drafts.rounds > 0 and 0 <= spec.drafts.accepted <= spec.drafts.drafted <= k * spec.drafts.rounds
    # Every token after the first (from the prefill) is an accepted draft or the target's token of a round,
    # except a plain last step when only one token was left to produce.
    d = spec.drafts
    assert d.accepted + d.rounds <= S.max_new_tokens - 1 <= d.accepted + d.rounds + 1


def test_speculative_equals_hf_speculative(tiny_models, inputs, fast, hf):
    x = inputs([1])
    assert torch.equal(run("speculative", fast, x).sequences, run("speculative", hf, x).sequences)


@pytest.mark.parametrize("k", [2, 4])
def test_draft_equal_to_target_is_always_accepted(tiny_models, inputs, k):
    models = dataclasses.replace(tiny_models, draft=tiny_models.target)
    fast = FastEngine(models)
    x = inputs([0])
    settings = dataclasses.replace(S, max_new_tokens=18, num_draft_tokens=k)  # 17 after the first: crops a round
    spec = run("speculative", fast, x, settings)
    assert spec.drafts.accepted == spec.drafts.drafted > 0
    assert spec.sequences.shape == (1, 18) and spec.new_tokens == [18]  # max_new_tokens exactly, never more
    assert torch.equal(spec.sequences, run("standard", fast, x, settings).sequences)
    full_rounds, rest = divmod(17, k + 1)
    assert spec.drafts.rounds == full_rounds + (rest > 1)  # a round of k+1 tokens each; a last 1 is a plain step


# -- the no-sync round: the same tokens and counts as the synced one, a read per batch of rounds --------------------


def counts(g: Generation) -> tuple:
    d = g.drafts
    return (d.drafted, d.accepted, d.rounds, d.accepted_by_position, d.offered_by_position, d.natural_eos,
            d.target_forwards, d.drafted_all)


@pytest.fixture(scope="module")
def drafters(tiny_models):
    """Models and method per drafter: the context-free pair, whose draft never agrees with the target; the tiny
    draft; the target with noise on its output head (agrees often, not always: accepted prefixes of every length);
    the target as its own draft (every draft accepted); prompt lookup."""
    import copy

    noisy = copy.deepcopy(tiny_models.target)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        w = noisy.lm_head.weight
        w.add_(torch.randn(w.shape, generator=generator) * w.std() * 0.1)
    return {"disagreeing": (context_free_models(), "speculative"), "tiny": (tiny_models, "speculative"),
            "noisy": (dataclasses.replace(tiny_models, draft=noisy), "speculative"),
            "self": (dataclasses.replace(tiny_models, draft=tiny_models.target), "speculative"),
            "lookup": (tiny_models, "prompt_lookup")}


def drafter_inputs(inputs, drafter):
    """Prompt 1 (repeated n-grams: lookup drafts), or for the context-free pair a prompt of its own vocabulary."""
    from decoding.types import Inputs

    if drafter != "disagreeing":
        return inputs([1])
    ids = torch.tensor([[1, 2, 3]])
    return Inputs(ids, torch.ones_like(ids), (0,), (0,))


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("drafter", ["disagreeing", "tiny", "noisy", "self", "lookup"])
def test_nosync_round_equals_the_synced_round(inputs, drafters, drafter, k):
    models, method = drafters[drafter]
    settings = dataclasses.replace(S, max_new_tokens=19, num_draft_tokens=k, prompt_lookup_num_tokens=k)
    x = drafter_inputs(inputs, drafter)
    synced = run(method, FastEngine(models, fast_nosync=False), x, settings)
    nosync = run(method, FastEngine(models, fast_nosync=True), x, settings)
    assert torch.equal(nosync.sequences, synced.sequences)
    assert counts(nosync) == counts(synced)
    assert synced.drafts.rounds > 0 and nosync.sequences.shape == (1, 19)
    if drafter == "disagreeing":
        assert synced.drafts.accepted == 0
    if drafter in ("noisy", "self"):
        assert synced.drafts.accepted > 0
    if drafter == "noisy":
        assert synced.drafts.accepted < synced.drafts.drafted


@pytest.mark.parametrize("drafter", ["noisy", "self", "lookup"])
def test_nosync_round_counts_a_forced_length_alike(tiny_models, inputs, drafters, drafter):
    """EOS redefined as the token greedy decoding emits at index 3, masked there by a forced length: the natural EOS
    cuts the counts (of earlier rounds too: a round's offered positions past it), never the tokens."""
    models, method = drafters[drafter]
    x = inputs([1])
    settings = dataclasses.replace(S, max_new_tokens=16, num_draft_tokens=3, prompt_lookup_num_tokens=3)
    eos = run("standard", FastEngine(tiny_models), x, settings).sequences[0, 3].item()
    models = dataclasses.replace(models, eos_token_ids=(eos,))
    synced = run(method, FastEngine(models, fast_nosync=False), x, settings)
    nosync = run(method, FastEngine(models, fast_nosync=True), x, settings)
    assert torch.equal(nosync.sequences, synced.sequences) and nosync.sequences.shape == (1, 16)
    assert counts(nosync) == counts(synced) and nosync.drafts.natural_eos is not None


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("min_new", [0, 7])
def test_nosync_round_stops_at_eos_like_standard(tiny_models, inputs, drafters, k, min_new):
    """EOS (the token greedy decoding emits at index 5) ends the run, checked every few rounds on the device; with
    min_new_tokens past it, it is masked until then. Tokens past the EOS are padding, the length is the standard's."""
    models, stop = eos_models(drafters["noisy"][0], inputs, 5)
    x = inputs([1])
    base = dict(max_new_tokens=24, min_new_tokens=min_new)
    standard = FastEngine(models).generate(Request(x.input_ids, x.attention_mask, **base), NullProbe())
    if min_new == 0:
        assert standard.new_tokens == [stop]
    for extra in (dict(use_draft=True, num_draft_tokens=k), dict(prompt_lookup_num_tokens=k)):
        request = Request(x.input_ids, x.attention_mask, **base, **extra)
        nosync = FastEngine(models, fast_nosync=True).generate(request, NullProbe())
        synced = FastEngine(models, fast_nosync=False).generate(request, NullProbe())
        assert torch.equal(nosync.sequences, standard.sequences), extra
        assert nosync.new_tokens == standard.new_tokens
        assert counts(nosync) == counts(synced), extra
        check_shape(nosync, models)


class DeviceReads:
    """Counts the ways Python reads a tensor's value (each a host sync on a GPU) while installed."""

    METHODS = ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__")

    def __init__(self, monkeypatch):
        self.n = 0
        for name in self.METHODS:
            original = getattr(torch.Tensor, name)

            def counted(*args, _original=original, **kwargs):
                self.n += 1
                return _original(*args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


@pytest.mark.parametrize("drafter", ["disagreeing", "self", "lookup"])
def test_nosync_round_reads_the_device_once_per_batch_of_rounds(monkeypatch, inputs, drafters, drafter):
    """A fixed length: the host reads how many tokens exist once per CHECK_EVERY rounds (fewer near the end), never
    once per round; the counts wait on the device until asked for. The synced round, for contrast, reads every
    round: the counter sees reads."""
    from engines.fast.loops import CHECK_EVERY

    models, method = drafters[drafter]
    x = drafter_inputs(inputs, drafter)
    k, n = 3, 40
    request = Request(x.input_ids, x.attention_mask, max_new_tokens=n, min_new_tokens=n, use_draft=method ==
                      "speculative", num_draft_tokens=k, prompt_lookup_num_tokens=k if method != "speculative" else 0)
    reads = {}
    for nosync in (True, False):
        engine = FastEngine(models, fast_nosync=nosync)
        engine.generate(request, NullProbe())  # caches and round state allocated
        with monkeypatch.context() as patch:
            counter = DeviceReads(patch)
            g = engine.generate(request, NullProbe())
            reads[nosync] = counter.n
        assert g.sequences.shape == (1, n)
    rounds = g.drafts.target_forwards - 1  # every forward after the prefill is a round (or a plain step in its place)
    assert rounds > CHECK_EVERY  # 39 tokens at most k + 1 per round
    assert reads[True] <= -(-rounds // CHECK_EVERY) + 2, (reads, rounds)
    assert reads[False] >= rounds


def test_lookup_on_the_device_equals_prompt_lookup_candidates():
    """rounds.lookup_drafts against the host's prompt_lookup_candidates, on random sequences of 6 symbols (n-grams
    repeat, EOS occurs) placed after some stale slots (a left padding) in a buffer of stale tokens."""
    from engines.fast.rounds import lookup_drafts

    generator = torch.Generator().manual_seed(0)
    eos, k, M = 5, 4, 40
    eos_mask = torch.arange(6) == eos  # (6,)
    for _ in range(400):
        start, length, room = (int(torch.randint(lo, hi, (1,), generator=generator)) for lo, hi in
                               ((0, 4), (1, 30), (0, k + 1)))
        buffer = torch.randint(0, 6, (M,), generator=generator)  # (M,)
        sequence = buffer[start:start + length].tolist()
        drafts, offered = lookup_drafts(buffer, torch.tensor(start), torch.tensor(start + length - 1),
                                        torch.tensor(room), eos_mask, torch.tensor(-1), k)
        expected = prompt_lookup_candidates(sequence, room, {eos})
        assert int(offered) == len(expected), (sequence, room)
        assert drafts[0].tolist() == expected + [-1] * (k - len(expected)), (sequence, room)


def test_nosync_is_the_default_and_the_option_turns_it_off(tiny_models, monkeypatch, tmp_path):
    """The former BENCH_FAST_* switches are config keys: the engine made from a config follows them, the row
    records them, and the environment no longer changes anything unrecorded."""
    from bench.config import Config
    from engines import engine_options, make_engine, options_text

    assert FastEngine(tiny_models).nosync
    monkeypatch.setenv("BENCH_FAST_NOSYNC", "0")
    assert FastEngine(tiny_models).nosync
    config = Config.from_dict(dict(model="tiny-random/target", engine="fast", fast_nosync=False, fast_fuse=False,
                                   results=str(tmp_path / "r.csv")), check_models=False)
    engine = make_engine("fast", tiny_models, config)
    assert not engine.nosync and not engine.fuse and make_engine("fast", tiny_models).nosync
    assert options_text(engine_options("fast", config)) == \
        "compile=true, fast_fuse=false, fast_tuning=true, fast_nosync=false"


# -- sampling ---------------------------------------------------------------------------------------------------


def test_nucleus_repeats_with_its_seed_and_differs_with_another(tiny_models, inputs, fast):
    x = inputs([0])
    settings = dataclasses.replace(S, temperature=1.5, top_p=0.95)
    a, b = run("nucleus", fast, x, settings), run("nucleus", fast, x, settings)
    other = run("nucleus", fast, x, dataclasses.replace(settings, seed=1))
    assert torch.equal(a.sequences, b.sequences)
    assert not torch.equal(a.sequences, other.sequences)
    check_shape(a, tiny_models)


def test_speculative_sampling_repeats_with_its_seed(tiny_models, inputs, fast):
    x = inputs([1])
    spec = METHODS["speculative"]
    settings = dataclasses.replace(S, temperature=1.5, top_p=0.95)
    a = spec(x, settings, fast, NullProbe(), do_sample=True)
    b = spec(x, settings, fast, NullProbe(), do_sample=True)
    assert torch.equal(a.sequences, b.sequences)
    assert (a.drafts.drafted, a.drafts.accepted) == (b.drafts.drafted, b.drafts.accepted)
    assert a.sequences.shape == (1, S.max_new_tokens)


def chi_square_ok(counts: torch.Tensor, probs: torch.Tensor) -> tuple[bool, float, float]:
    """Pearson's goodness of fit of observed counts to probabilities. A sample in a cell of probability 0 fails
    outright; cells expecting fewer than 5 samples are pooled into one. Returns (passes at ALPHA, statistic,
    critical value chi2.ppf(1 - ALPHA, cells - 1))."""
    counts, probs = counts.double(), probs.double()
    support = probs > 0
    if counts[~support].sum() > 0:
        return False, float("inf"), 0.0
    observed, expected = counts[support], counts.sum() * probs[support] / probs[support].sum()
    small = expected < 5
    if small.any():
        observed = torch.cat([observed[~small], observed[small].sum().view(1)])
        expected = torch.cat([expected[~small], expected[small].sum().view(1)])
    assert len(expected) >= 2 and expected.min() >= 1, "too few samples for a chi-square test"
    statistic = float(((observed - expected) ** 2 / expected).sum())
    critical = float(chi2.ppf(1 - ALPHA, len(expected) - 1))
    return statistic < critical, statistic, critical


def always_accept(drafts, q, p, n_real):
    """A broken rule on purpose: take every offered draft, then a token from the target."""
    n = torch.minimum(torch.full(drafts.shape[:1], drafts.shape[1]), torch.as_tensor(n_real)).long()
    nxt = torch.multinomial(p[torch.arange(drafts.shape[0]), n], 1)[:, 0]
    return n, nxt


P = torch.tensor([[0.30, 0.25, 0.20, 0.10, 0.08, 0.05, 0.02, 0.00],
                  [0.05, 0.05, 0.40, 0.30, 0.10, 0.05, 0.05, 0.00],
                  [0.10, 0.10, 0.10, 0.10, 0.20, 0.20, 0.10, 0.10]])  # target, 3 positions (k = 2)
Q = torch.tensor([[0.05, 0.10, 0.05, 0.30, 0.30, 0.05, 0.05, 0.10],
                  [0.30, 0.30, 0.05, 0.05, 0.10, 0.10, 0.05, 0.05]])  # draft, k = 2 (puts mass where p is 0)
Q_INSIDE = torch.tensor([[0.05, 0.10, 0.05, 0.30, 0.30, 0.05, 0.15, 0.00],
                         [0.30, 0.30, 0.05, 0.05, 0.10, 0.10, 0.10, 0.00]])  # a draft within p's support


def first_tokens(accept_fn, n_real, q=Q, rows=20000, seed=0):
    """The first token a round outputs, for `rows` independent rounds with drafts sampled from q."""
    torch.manual_seed(seed)
    drafts = torch.stack([torch.multinomial(q[i], rows, replacement=True) for i in range(2)], dim=1)
    n, nxt = accept_fn(drafts, q.expand(rows, -1, -1), P.expand(rows, -1, -1), torch.tensor(n_real))
    first = torch.where(n > 0, drafts[:, 0], nxt)
    return torch.bincount(first, minlength=8), n


@pytest.mark.parametrize("q", [Q, Q_INSIDE], ids=["q-outside-support", "q-inside-support"])
@pytest.mark.parametrize("n_real", [2, 1, 0])
def test_rejection_rule_keeps_the_target_distribution(n_real, q):
    counts, n = first_tokens(rejection_accept, n_real, q)
    ok, stat, crit = chi_square_ok(counts, P[0])
    assert ok, f"chi2 {stat:.1f} >= {crit:.1f}"
    assert int(n.max()) <= n_real  # never accepts a draft that was not offered
    if n_real:
        assert 0 < float((n > 0).float().mean()) < 1  # both branches (accept, residual draw) really ran


@pytest.mark.parametrize("q", [Q, Q_INSIDE], ids=["q-outside-support", "q-inside-support"])
def test_always_accepting_fails_the_same_test(q):
    counts, _ = first_tokens(always_accept, 2, q)
    ok, stat, crit = chi_square_ok(counts, P[0])
    # Outside p's support a single sample refutes; inside it the statistic itself is far over the critical value.
    assert not ok and stat > 10 * crit


def test_greedy_is_the_rejection_rule_on_one_hot_distributions():
    """Deterministic drafts (q one-hot) against a one-hot target: accept exactly the matching prefix."""
    eye = torch.eye(8)
    drafts = torch.tensor([[3, 4, 5], [3, 1, 5], [2, 4, 5], [3, 4, 5]])
    target = torch.tensor([[3, 4, 5, 6], [3, 4, 5, 6], [3, 4, 5, 6], [3, 4, 0, 6]])
    n, nxt = rejection_accept(drafts, eye[drafts], eye[target], torch.tensor(3))
    assert n.tolist() == [3, 1, 0, 2] and nxt.tolist() == [6, 4, 3, 0]
    n, nxt = rejection_accept(drafts, eye[drafts], eye[target], torch.tensor(1))  # only one draft offered
    assert n.tolist() == [1, 1, 0, 1] and nxt.tolist() == [4, 4, 3, 4]


def context_free_models(vocab=12, eos=11):
    """Tiny target and draft whose next-token distributions ignore the context: every token has the same embedding,
    so attention averages equal values and every position sees the same logits. Their outputs are then i.i.d., and
    thousands of tokens of one generation are thousands of samples of one distribution."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from models.loading import LoadedModels

    def build(seed, scale):
        config = Qwen3Config(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=1, head_dim=8, tie_word_embeddings=False,
                             max_position_embeddings=8192, rope_parameters={"rope_type": "default", "rope_theta": 1e4},
                             pad_token_id=0, bos_token_id=0, eos_token_id=eos)
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config).eval()
        with torch.no_grad():
            model.model.embed_tokens.weight.copy_(torch.randn(1, 16).expand(vocab, -1))  # row 0 (pad) was 0
            torch.manual_seed(seed + 100)
            model.lm_head.weight.normal_(0, scale)  # logits of std ~1: several tokens matter, top-p drops some
        return model

    return LoadedModels(target=build(1, 0.25), tokenizer=None, draft=build(2, 0.25), device=torch.device("cpu"),
                        dtype=torch.float32, pad_token_id=0, eos_token_ids=(eos,), random_weights=True)


def target_distribution(models, temperature, top_p):
    """The target's warped distribution computed by transformers' own logits processors (not ours)."""
    from transformers import (LogitsProcessorList, MinNewTokensLengthLogitsProcessor, TemperatureLogitsWarper,
                              TopPLogitsWarper)

    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        logits = models.target(ids).logits[:, -1].float()
    processors = LogitsProcessorList([
        MinNewTokensLengthLogitsProcessor(3, 10**6, list(models.eos_token_ids)),
        TemperatureLogitsWarper(temperature), TopPLogitsWarper(top_p)])
    return torch.softmax(processors(ids, logits), dim=-1)[0]


@pytest.mark.parametrize("accept, drafter, nosync", [
    ("rejection", "draft", True), ("rejection", "draft", False), ("always", "draft", True), ("always", "draft", False),
    ("rejection", "lookup", True)], ids=lambda v: {True: "nosync", False: "synced"}.get(v, v))
def test_speculative_sampling_end_to_end_keeps_the_target_distribution(accept, drafter, nosync):
    """Both rounds, both drafters: a draft model's sampled drafts, and prompt lookup's deterministic ones (one-hot q;
    the context-free target's i.i.d. output repeats n-grams all the time). Lookup copies earlier output, which
    already follows p, so a broken rule would pass there: the broken rule is checked with the draft model only."""
    models = context_free_models()
    temperature, top_p, n = 0.9, 0.95, 1500
    p = target_distribution(models, temperature, top_p)
    assert int((p == 0).sum()) >= 2  # EOS (min_new_tokens) and top-p really removed tokens
    engine = FastEngine(models, accept_fn=rejection_accept if accept == "rejection" else always_accept,
                        fast_nosync=nosync)
    ids = torch.tensor([[1, 2, 3]])
    request = Request(ids, torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, do_sample=True,
                      temperature=temperature, top_p=top_p, use_draft=drafter == "draft", num_draft_tokens=3,
                      prompt_lookup_num_tokens=3 if drafter == "lookup" else 0, seed=7)
    g = engine.generate(request, NullProbe())
    assert g.sequences.shape == (1, n) and g.drafts.rounds > 0
    ok, stat, crit = chi_square_ok(torch.bincount(g.sequences[0], minlength=p.numel()), p)
    if accept == "rejection":
        assert 0 < g.drafts.accepted < g.drafts.drafted  # the draft differs from the target: both branches ran
        assert ok, f"chi2 {stat:.1f} >= {crit:.1f}"
    else:
        assert not ok, "the chi-square test cannot tell a broken acceptance rule from the real one"


def test_nucleus_sampling_follows_the_warped_distribution():
    models = context_free_models()
    p = target_distribution(models, 0.9, 0.95)
    ids = torch.tensor([[1, 2, 3]])
    request = Request(ids, torch.ones_like(ids), max_new_tokens=1500, min_new_tokens=1500, do_sample=True,
                      temperature=0.9, top_p=0.95, seed=3)
    g = FastEngine(models).generate(request, NullProbe())
    ok, stat, crit = chi_square_ok(torch.bincount(g.sequences[0], minlength=p.numel()), p)
    assert ok, f"chi2 {stat:.1f} >= {crit:.1f}"


# -- the seam ---------------------------------------------------------------------------------------------------


class CountingProbe:
    def __init__(self, stop_after_polls=None):
        self.first = 0
        self.polls = 0
        self.stop_after = stop_after_polls

    def first_token(self):
        self.first += 1

    def should_stop(self):
        self.polls += 1
        return self.stop_after is not None and self.polls > self.stop_after


@pytest.mark.parametrize("method", ["standard", "speculative", "prompt_lookup"])
def test_probe_marks_the_first_token_once_and_can_stop_the_run(tiny_models, inputs, fast, method):
    x = inputs([1])
    probe = CountingProbe()
    full = METHODS[method](x, S, fast, probe)
    assert probe.first == 1 and probe.polls > 0 and full.new_tokens == [S.max_new_tokens]
    probe = CountingProbe(stop_after_polls=0)
    stopped = METHODS[method](x, S, fast, probe)
    assert probe.first == 1
    assert 1 <= stopped.sequences.shape[1] < S.max_new_tokens
    assert stopped.new_tokens == [stopped.sequences.shape[1]]
    assert torch.equal(stopped.sequences[0], full.sequences[0, :stopped.sequences.shape[1]])


def test_beam_search_and_batched_speculation_are_refused_with_a_reason(tiny_models, inputs, fast):
    with pytest.raises(UnsupportedSetting, match="beam search runs on the hf engine only"):
        run("beam_search", fast, inputs([0]), dataclasses.replace(S, num_beams=2, num_return_sequences=1))
    x = inputs([0, 1])
    with pytest.raises(UnsupportedSetting, match="batch size 1"):
        fast.generate(Request(x.input_ids, x.attention_mask, 8, 8, use_draft=True), NullProbe())


def test_cpu_runs_uncompiled(fast):
    assert fast.name == "fast" and fast.compile is False and fast.compile_seconds == 0.0


def test_prompt_lookup_candidates_follow_transformers():
    # The earliest earlier occurrence of the last 2-gram, else of the last token; cut before EOS; none if unseen.
    assert prompt_lookup_candidates([5, 6, 7, 8, 5, 6], 3, {99}) == [7, 8, 5]
    assert prompt_lookup_candidates([5, 6, 7, 8, 9, 6], 10, {99}) == [7, 8, 9, 6]
    assert prompt_lookup_candidates([5, 6, 99, 7, 5, 6], 10, {99}) == []
    assert prompt_lookup_candidates([1, 2, 3], 10, {99}) == []


# -- the fused forward ------------------------------------------------------------------------------------------


def test_fused_forward_shares_the_weights_and_equals_the_models_own_forward(tiny_models, inputs, fast, hf):
    x = inputs([0, 1, 2])
    params = sum(p.numel() for p in tiny_models.target.parameters())
    fused = run("batched", fast, x)
    assert fast._forwards[id(tiny_models.target)].fused  # tiny Qwen3 runs FusedForward
    attn = tiny_models.target.model.layers[0].self_attn
    # q/k/v are views of one fused tensor: no extra memory, and the hf engine computes with the same values.
    assert attn.q_proj.weight.untyped_storage().data_ptr() == attn.v_proj.weight.untyped_storage().data_ptr()
    assert sum(p.numel() for p in tiny_models.target.parameters()) == params
    unfused = run("batched", FastEngine(tiny_models, fast_fuse=False), x)
    assert torch.equal(fused.sequences, unfused.sequences)
    assert torch.equal(fused.sequences, run("batched", hf, x).sequences)


@pytest.mark.parametrize("fuse", [True, False])
def test_steps_trace_into_one_graph(tiny_models, fuse):
    """What CUDA compiles: dynamo must trace the decode step and the verify forward whole (fullgraph), and the
    traced step must advance the tokens exactly as the uncompiled one."""
    from engines.fast.cache import StaticKVCache
    from engines.fast.model import make_forward
    from engines.fast.steps import decode_step, verify

    torch._dynamo.reset()
    engine = FastEngine(tiny_models, fast_fuse=fuse)
    fwd = make_forward(tiny_models.target, fuse)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    rules = engine._rules(Request(ids, torch.ones_like(ids), 8, 8), ids.shape[1])
    caches = [StaticKVCache(tiny_models.target, 1, 128) for _ in range(2)]
    for c in caches:
        c.begin_request(torch.ones_like(ids))
        c.tokens[:, :5] = ids
    step = torch.compile(decode_step, fullgraph=True, dynamic=False, backend="eager")
    with torch.no_grad():
        for _ in range(6):
            decode_step(fwd, caches[0], rules, False)
            step(fwd, caches[1], rules, False)
        assert torch.equal(caches[0].tokens, caches[1].tokens) and int(caches[1].pos) == 6
        # The plain-step variant that also says whether the unforced choice was EOS (prompt lookup, forced length).
        flags = [decode_step(fwd, caches[0], rules, False, True), step(fwd, caches[1], rules, False, True)]
        assert torch.equal(*flags) and flags[0].dtype == torch.bool and torch.equal(caches[0].tokens, caches[1].tokens)
        n_real = torch.tensor(2)
        drafts = torch.tensor([[3, 4, 5]])
        compiled = torch.compile(verify, fullgraph=True, dynamic=False, backend="eager")
        ref = verify(fwd, caches[0], drafts, None, n_real, rules, rejection_accept)
        out = compiled(fwd, caches[1], drafts, None, n_real, rules, rejection_accept)
    assert all(torch.equal(a, b) for a, b in zip(ref, out))


@pytest.mark.parametrize("drafter, do_sample", [("draft", False), ("draft", True), ("lookup", True)])
def test_round_pieces_trace_into_one_graph_each(tiny_models, drafter, do_sample):
    """What CUDA captures: each piece of the no-sync round (the draft model's first and next draft step, its verify,
    a prompt-lookup round) must trace into one graph (fullgraph: no host read inside), and the traced pieces, run in
    the engine's order, must write what the plain round writes."""
    from engines.fast.cache import StaticKVCache
    from engines.fast.model import make_forward
    from engines.fast.rounds import (DraftBuffers, RoundState, draft_first, draft_next, lookup_round,
                                     speculative_round, verify_drafted)

    torch._dynamo.reset()
    engine = FastEngine(tiny_models)
    ids = torch.tensor([[5, 6, 7, 5, 6, 8, 9]])  # (1, 7) repeated n-grams: lookup has something to offer
    L, k = ids.shape[1], 3
    rules = engine._rules(Request(ids, torch.ones_like(ids), 12, 12, do_sample=do_sample), L)
    target, draft = make_forward(tiny_models.target, True), make_forward(tiny_models.draft, True)
    runs = []
    for _ in range(2):
        caches = [StaticKVCache(m, 1, 128) for m in (tiny_models.target, tiny_models.draft)]
        for c in caches:
            c.begin_request(torch.ones_like(ids))
        caches[0].tokens[:, :L] = ids
        caches[0].tokens[:, L] = 7
        state = RoundState.new(128, "cpu")
        state.begin(L, 12, 12, 0, torch.tensor([7]), torch.tensor([False]), rules)
        vocab = tiny_models.target.get_output_embeddings().weight.shape[0]
        runs.append((caches, state, DraftBuffers.new(k, vocab, do_sample, "cpu")))
    first, nxt, verify, lookup = (torch.compile(f, fullgraph=True, dynamic=False, backend="eager")
                                  for f in (draft_first, draft_next, verify_drafted, lookup_round))
    with torch.no_grad():
        for _ in range(3):
            (caches, state, buffers), (tcaches, tstate, tbuffers) = runs
            torch.manual_seed(0)
            speculative_round(target, caches[0], draft if drafter == "draft" else None,
                              caches[1] if drafter == "draft" else None, state, rules, rejection_accept, k, buffers)
            torch.manual_seed(0)
            if drafter == "draft":
                first(draft, tcaches[1], tcaches[0].tokens, tstate, rules, tbuffers)
                for _ in range(k - 1):
                    nxt(draft, tcaches[1], rules, tbuffers)
                verify(target, tcaches[0], tstate, rules, rejection_accept, tbuffers, k)
            else:
                lookup(target, tcaches[0], tstate, rules, rejection_accept, k)
    (plain_caches, plain, _), (traced_caches, traced, _) = runs
    assert torch.equal(plain_caches[0].tokens, traced_caches[0].tokens)
    assert torch.equal(plain.snapshot(), traced.snapshot()) and int(plain.n_new) > 3


def test_fast_refuses_logits_options_it_cannot_apply(tiny_models, inputs):
    x = inputs([0])
    request = Request(x.input_ids, x.attention_mask, max_new_tokens=4, min_new_tokens=4, do_sample=True,
                      logits_options=(("typical_p", 0.5),))
    with pytest.raises(UnsupportedSetting, match="typical_p"):
        FastEngine(tiny_models).generate(request, NullProbe())
