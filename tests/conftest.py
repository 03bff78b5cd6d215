import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    "Explain speculative decoding",
    "What is the capital of France? Paris is the capital of France, and Berlin is the capital of",
    "Hi",
]


# The random tiny pair (models/tiny/__init__.py): exactly known behaviour (peaked logits without near-ties, a draft that mostly
# disagrees), which the engine and method tests pin. The trained pair (tiny/target, tiny/draft) is tested in
# test_tiny_models.py and runs the tiny preset.
RANDOM_TARGET, RANDOM_DRAFT = "tiny-random/target", "tiny-random/draft"


@pytest.fixture(scope="session")
def tiny_models():
    from models.loading import load_models

    return load_models(RANDOM_TARGET, RANDOM_DRAFT, device="cpu", dtype="float32")


def make_inputs(models, indices, completion=0):
    """Left-padded Inputs for the PROMPTS at these indices, as the runner builds them."""
    from decoding.types import Inputs

    enc = models.tokenizer([PROMPTS[i] for i in indices], return_tensors="pt", padding=True)
    return Inputs(enc.input_ids, enc.attention_mask, tuple(indices), tuple(completion for _ in indices))


@pytest.fixture
def inputs(tiny_models):
    return lambda indices, completion=0: make_inputs(tiny_models, indices, completion)


def tiny_config(tmp_path, **overrides):
    from bench.config import Config

    data = dict(model=RANDOM_TARGET, draft_model=RANDOM_DRAFT, prompts=PROMPTS[:2], max_new_tokens=12,
                device="cpu", dtype="float32", warmup=1, repetitions=2, batch_sizes=[2],
                results=str(tmp_path / "runs.csv"))
    data.update(overrides)
    return Config.from_dict(data)


def greedy_tokens(models, ids, steps):
    """Reference greedy decoding by hand: full forward each step, argmax, no cache, no generate."""
    ids = ids.clone()
    with torch.inference_mode():
        for _ in range(steps):
            logits = models.target(ids).logits[:, -1]
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids
