"""The tiny pair's data: the standard library split by file into training and held-out text, the tokenizer trained on
the training side, the token streams, the windows sampled from them, and the prompts the figures are measured on.

A file is held out when the sha256 of its relative path, read as a number, is 0 modulo 10: about a tenth of the
files, the same ones on every machine; nothing of a held-out file is seen by the tokenizer or the models.
"""
from __future__ import annotations

import hashlib
import json
import sysconfig
from pathlib import Path

SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "turtledemo", "site-packages", "dist-packages", "__pycache__",
             "encodings", "pydoc_data", "ensurepip"}
MAX_FILE_BYTES = 400_000  # generated tables, not code
HELDOUT_MODULUS = 10
SPECIALS = ("<|endoftext|>", "<|pad|>")


# -- corpus -----------------------------------------------------------------------------------------------------------


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def is_heldout(relative: str) -> bool:
    """Deterministic and by file: the same file is always on the same side, on every machine."""
    return int(hashlib.sha256(relative.encode()).hexdigest(), 16) % HELDOUT_MODULUS == 0


def corpus_files(root: Path | None = None) -> list[tuple[str, Path]]:
    """(relative posix path, path) of every corpus file, sorted by relative path."""
    root = root or stdlib_root()
    files = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if any(part in SKIP_DIRS for part in rel.parts[:-1]) or rel.name.startswith("_sysconfigdata"):
            continue
        if not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
            continue
        files.append((rel.as_posix(), path))
    return sorted(files)


def read_split(max_files: int = 0) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train, heldout) lists of (relative path, text)."""
    train, heldout = [], []
    for rel, path in corpus_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        (heldout if is_heldout(rel) else train).append((rel, text))
    if max_files:
        train, heldout = train[:max_files], heldout[:max(1, max_files // 3)]
    return train, heldout


# -- tokenizer --------------------------------------------------------------------------------------------------------


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer, length=len(texts))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=SPECIALS[0], bos_token=SPECIALS[0],
                                   pad_token=SPECIALS[1], padding_side="left")


def encode(tokenizer, texts: list[str]):
    """One stream of token ids: the files in order, each followed by <|endoftext|>."""
    import torch

    eos = tokenizer.eos_token_id
    ids = []
    for chunk in tokenizer(texts, add_special_tokens=False).input_ids:
        ids.extend(chunk)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.int32)


# -- windows ----------------------------------------------------------------------------------------------------------


def sample_windows(stream, batch: int, length: int, generator):
    """`batch` windows of `length` training tokens at random places."""
    import torch

    starts = torch.randint(0, len(stream) - length, (batch,), generator=generator)
    return torch.stack([stream[s:s + length] for s in starts.tolist()]).long()


def sample_batch(stream, batch: int, seq: int, generator):
    windows = sample_windows(stream, batch, seq + 1, generator)
    return windows[:, :-1], windows[:, 1:]


def eval_windows(stream, seq: int, n: int):
    """n windows of seq + 1 tokens spread evenly over the held-out stream (fixed, so figures compare)."""
    import torch

    n = max(1, min(n, (len(stream) - 1) // (seq + 1)))
    starts = torch.linspace(0, len(stream) - seq - 1, n).long().tolist()
    return torch.stack([stream[s:s + seq + 1] for s in starts]).long()


# -- prompts for the figures ------------------------------------------------------------------------------------------


def tiny_prompts() -> list[str]:
    preset = Path(__file__).resolve().parents[2] / "presets" / "tiny.json"
    return json.loads(preset.read_text())["prompts"]


def heldout_snippets(heldout: list[tuple[str, str]], n: int, chars: int = 400) -> list[str]:
    """Up to n prompts from held-out files: the text from a file's first top-level `def`, about `chars` long, ending
    after the first word of a line (a prompt that ends on a newline would end where the tokenizer never splits)."""
    import re

    snippets = []
    for rel, text in heldout:
        at = text.find("\ndef ")
        if at < 0:
            continue
        body = text[at + 1:at + 1 + chars]
        cut = body.rfind("\n") + 1
        word = re.match(r"[ \t]*\S+", text[at + 1 + cut:]) if cut else None
        if word and body.count("\n") >= 3:
            snippets.append(body[:cut] + word.group(0))
        if len(snippets) == n:
            break
    return snippets
