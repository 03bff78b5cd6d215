"""The files the tiny pair ships: each model saved in float16 with only the files a load needs, and checksums.sha256
(`sha256sum -c` format) over all of them, which the tests verify."""
from __future__ import annotations

import hashlib
from pathlib import Path

SHIPPED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_checksums(folder: Path) -> Path:
    lines = [f"{sha256(folder / name / f)}  {name}/{f}" for name in ("target", "draft") for f in SHIPPED_FILES]
    path = folder / "checksums.sha256"
    path.write_text("\n".join(lines) + "\n")
    return path


def verify_checksums(folder: Path) -> list[str]:
    """Files whose sha256 differs from checksums.sha256 (empty: all match)."""
    bad = []
    for line in (folder / "checksums.sha256").read_text().splitlines():
        digest, name = line.split(None, 1)
        path = folder / name.strip()
        if not path.is_file() or sha256(path) != digest:
            bad.append(name.strip())
    return bad


def save(model, tokenizer, path: Path) -> None:
    import torch

    path.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(path, safe_serialization=True)
    model.to(torch.float32)
    tokenizer.save_pretrained(path)
    for extra in set(p.name for p in path.iterdir()) - set(SHIPPED_FILES):  # e.g. special_tokens_map.json
        (path / extra).unlink()
