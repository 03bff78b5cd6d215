"""The tiny models of the `tiny` preset and the tests, offline, as ordinary Hugging Face folders.

- `tiny/target`, `tiny/draft`: a trained pair shipped in the repository (`models/tiny/`): a 4-layer Qwen3 target and
  a 2-layer draft distilled from it, trained on the Python standard library by `python scripts/train_tiny.py`
  (models/tiny/train.py). Their drafts are really accepted, so speculative decoding shows real figures.
- `tiny-random/target`, `tiny-random/draft`: random Qwen3 models with exactly known behaviour (peaked logits, a draft
  that disagrees with the target), built on first use into `.cache/tiny` (or BENCH_TINY_DIR). Tests that pin exact
  behaviour use these.

    python -m models.tiny            # the folders of all four ids (builds the random ones)
    python scripts/train_tiny.py ... # retrain the shipped pair (see models/tiny/train.py)
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

TINY_PREFIX = "tiny/"
RANDOM_PREFIX = "tiny-random/"
TINY_NAMES = ("target", "draft")
TRAINED_ROOT = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("BENCH_TINY_DIR", Path(__file__).resolve().parents[2] / ".cache" / "tiny"))

# Enough varied text for a few hundred byte-level merges, so prompts tokenize into real subwords.
CORPUS = """The quick brown fox jumps over the lazy dog. Speculative decoding lets a small draft model
propose tokens that a large target model verifies in a single forward pass. Beam search keeps the
best few partial sequences at every step. Nucleus sampling draws from the smallest set of tokens
whose probability mass exceeds top p. Batched generation pads prompts on the left so that every row
ends at the same position. Memory bandwidth, not arithmetic, bounds decoding at batch size one.
Once upon a time there was a little model that wanted to generate text very quickly indeed.
def fibonacci(n): return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)
Explain the theory of relativity in simple terms. Write a haiku about the ocean at night.
What is the capital of France? Paris is the capital of France, and Berlin is the capital of Germany.
""" * 4

SHAPES = {
    # hidden, layers, heads, kv heads, intermediate, seed
    "target": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=128, seed=1234),
    "draft": dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                  intermediate_size=64, seed=4321),
}


def is_tiny(model_id: str) -> bool:
    return model_id.startswith((TINY_PREFIX, RANDOM_PREFIX))


def unavailable(model_id: str) -> str | None:
    """Why a tiny id cannot be loaded, or None."""
    prefix = RANDOM_PREFIX if model_id.startswith(RANDOM_PREFIX) else TINY_PREFIX
    if model_id[len(prefix):] not in TINY_NAMES:
        return f"unknown tiny model (use {prefix}target or {prefix}draft)"
    if prefix == TINY_PREFIX and not (TRAINED_ROOT / model_id[len(prefix):] / "config.json").exists():
        return f"the trained tiny models are missing from {TRAINED_ROOT}: retrain them with python scripts/train_tiny.py"
    return None


def tiny_path(model_id: str) -> Path:
    """The folder of a tiny id: the shipped trained folder, or the random one (built on first use)."""
    prefix = RANDOM_PREFIX if model_id.startswith(RANDOM_PREFIX) else TINY_PREFIX
    name = model_id[len(prefix):]
    if name not in TINY_NAMES:
        raise ValueError(f"unknown tiny model '{model_id}': use one of "
                         f"{', '.join(p + n for p in (TINY_PREFIX, RANDOM_PREFIX) for n in TINY_NAMES)}")
    if prefix == TINY_PREFIX:
        return TRAINED_ROOT / name
    path = ROOT / name
    if not (path / "config.json").exists():
        build(name, path)
    return path


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([CORPUS], trainer)
    # Qwen-style: pad is <|endoftext|>, generation ends at <|im_end|>.
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   padding_side="left")


def build(name: str, path: Path) -> None:
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    tokenizer = build_tokenizer()
    shape = dict(SHAPES[name])
    seed = shape.pop("seed")
    config = Qwen3Config(
        vocab_size=512, head_dim=16, max_position_embeddings=4096, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        # A wide init gives peaked logits, so greedy argmax has no near-ties that float noise could flip.
        initializer_range=0.5, rms_norm_eps=1e-6,
        bos_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        **shape,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        do_sample=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Build in a temporary folder and rename: parallel test workers never see half a model.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=path.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.rename(tmp, path)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["train"]:
        print("retrain the shipped pair with: python scripts/train_tiny.py (see models/tiny/README.md)", file=sys.stderr)
        return 2
    for prefix in (TINY_PREFIX, RANDOM_PREFIX):
        for n in TINY_NAMES:
            print(tiny_path(prefix + n))
    return 0


