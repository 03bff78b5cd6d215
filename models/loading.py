"""Loading the target, the draft and the tokenizer: dtype, quantization, attention, random weights."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from models import tiny

SHIPPED_CONFIGS = Path(__file__).resolve().parent / "configs"


class ModelError(ValueError):
    """A model cannot be found or loaded; the message says which and how to fix it."""


@dataclass
class LoadedModels:
    target: torch.nn.Module
    tokenizer: object
    draft: torch.nn.Module | None
    device: torch.device
    dtype: torch.dtype
    pad_token_id: int
    eos_token_ids: tuple[int, ...]
    random_weights: bool
    notes: tuple[str, ...] = ()


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' asked for but torch sees no CUDA GPU: use device 'cpu' or 'auto'")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, dtype)


def shipped_config(model_id: str) -> Path | None:
    """config.json files shipped with the project, so random-weight runs need no download."""
    path = SHIPPED_CONFIGS / (model_id.replace("/", "__") + ".json")
    return path if path.exists() else None


def model_source(model_id: str) -> str:
    """A local folder or a Hub id; tiny/ ids are built here on first use."""
    if tiny.is_tiny(model_id):
        return str(tiny.tiny_path(model_id))
    return model_id


def check_available(model_id: str, random_weights: bool) -> str | None:
    """Why a model cannot be found offline, or None if it can be loaded."""
    if tiny.is_tiny(model_id):
        return tiny.unavailable(model_id)
    if Path(model_id).is_dir():
        return None if (Path(model_id) / "config.json").exists() else "folder has no config.json"
    if random_weights and shipped_config(model_id):
        return None
    if looks_like_path(model_id):
        return "no such folder"
    if not hub_offline():
        return None
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model_id, "config.json"), str):
        return None
    shipped = ", ".join(p.stem.replace("__", "/") for p in sorted(SHIPPED_CONFIGS.glob("*.json")))
    return (f"not a local folder and not in the Hugging Face cache while offline (HF_HUB_OFFLINE=1); "
            f"download it once online, pass a local folder, or use random_weights with one of: {shipped}")


def looks_like_path(model_id: str) -> bool:
    return model_id.startswith((".", "/", "~")) or model_id.count("/") > 1 or os.sep in model_id.replace("/", "")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def flash_attn_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("flash_attn") is not None


def quantization_config(quantization: str, dtype: torch.dtype):
    if quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    if quantization == "bnb-4bit":
        compute = torch.bfloat16 if dtype == torch.float32 else dtype
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute)
    return BitsAndBytesConfig(load_in_8bit=True)


def load_config(model_id: str):
    from transformers import AutoConfig

    shipped = shipped_config(model_id)
    if shipped and not Path(model_id).is_dir():
        try:
            return AutoConfig.from_pretrained(model_source(model_id))
        except OSError:
            data = json.loads(shipped.read_text())
            from transformers import CONFIG_MAPPING

            return CONFIG_MAPPING[data.pop("model_type")](**data)
    return AutoConfig.from_pretrained(model_source(model_id))


def load_model(model_id: str, *, device: torch.device, dtype: torch.dtype, quantization: str, attention: str,
               random_weights: bool) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    quant = quantization_config(quantization, dtype)
    if random_weights and quant is None:
        config = load_config(model_id)
        # Initialising on the target device is much faster than on the CPU for billions of weights.
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attention)
    else:
        source = random_weights_folder(model_id, dtype) if random_weights else model_source(model_id)
        kwargs = dict(dtype=dtype, attn_implementation=attention)
        if quant is not None:
            kwargs.update(quantization_config=quant, device_map={"": device.index or 0} if device.type == "cuda" else {"": "cpu"})
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        if quant is None:
            model = model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


def random_weights_folder(model_id: str, dtype: torch.dtype) -> str:
    """bitsandbytes quantizes while loading a checkpoint, so random weights are saved once and reloaded."""
    from transformers import AutoModelForCausalLM

    folder = Path(tiny.ROOT).parent / "random" / model_id.replace("/", "__")
    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(load_config(model_id), dtype=torch.bfloat16)
        model.save_pretrained(folder)
    return str(folder)


def load_tokenizer(model_id: str, random_weights: bool):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_source(model_id))
        note = None
    except (OSError, ValueError):
        if not random_weights:
            raise
        # Random weights need only token ids of a realistic count; the byte-level tiny tokenizer gives them.
        tokenizer = tiny.build_tokenizer()
        note = f"tokenizer of {model_id} not available offline: prompts tokenized with the byte-level tiny tokenizer"
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, note


def load_models(model_id: str, draft_id: str | None, *, device: str = "auto", dtype: str = "auto",
                quantization: str = "none", quantize_draft: bool = False, attention: str = "sdpa",
                random_weights: bool = False) -> LoadedModels:
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    if attention == "flash_attention_2" and not flash_attn_available():
        raise ModelError("attention 'flash_attention_2' needs the flash-attn package: "
                         "pip install flash-attn --no-build-isolation (builds against CUDA), or use attention 'sdpa'")
    if quantization != "none" and dev.type == "cpu" and torch_dtype == torch.float16:
        raise ModelError("bitsandbytes on the CPU needs dtype bfloat16 or float32, not float16")
    for mid in (model_id, draft_id):
        if mid is not None and (why := check_available(mid, random_weights)):
            raise ModelError(f"model '{mid}': {why}")
    target = load_model(model_id, device=dev, dtype=torch_dtype, quantization=quantization, attention=attention,
                        random_weights=random_weights)
    draft = None
    if draft_id:
        draft = load_model(draft_id, device=dev, dtype=torch_dtype,
                           quantization=quantization if quantize_draft else "none",
                           attention=attention, random_weights=random_weights)
        tv, dv = target.config.get_text_config().vocab_size, draft.config.get_text_config().vocab_size
        if tv != dv:
            raise ModelError(f"draft '{draft_id}' has a vocabulary of {dv} tokens and the target {tv}: "
                             "speculative decoding needs a draft that shares the target's tokenizer")
    tokenizer, note = load_tokenizer(model_id, random_weights)
    eos = target.generation_config.eos_token_id
    eos = (eos,) if isinstance(eos, int) else tuple(eos or (tokenizer.eos_token_id,))
    pad = target.generation_config.pad_token_id
    pad = pad if isinstance(pad, int) else tokenizer.pad_token_id
    notes = tuple(n for n in (note,) if n)
    return LoadedModels(target, tokenizer, draft, dev, torch_dtype, pad, eos, random_weights, notes)


def tokenizer_models(model_id: str, dtype: str, random_weights: bool) -> LoadedModels:
    """What a run whose engines all run elsewhere (a server) needs here: the tokenizer (to count streamed tokens and to send the prompts
    the in-process engines see) and the ids it needs, but no weights, which live on the server."""
    tokenizer, note = load_tokenizer(model_id, random_weights)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    try:
        from transformers import GenerationConfig

        generation = GenerationConfig.from_pretrained(model_source(model_id))
        eos = generation.eos_token_id if generation.eos_token_id is not None else eos
        pad = generation.pad_token_id if generation.pad_token_id is not None else pad
    except Exception:
        pass
    eos = (eos,) if isinstance(eos, int) else tuple(eos or ())
    # dtype names what the run asked for; the server's own dtype is in its command.
    return LoadedModels(None, tokenizer, None, torch.device("cpu"), dtype, pad, eos, random_weights,
                        tuple(n for n in (note,) if n))


def check_context(model_id: str, random_weights: bool, prompt_tokens_max: int | None, max_new_tokens: int) -> str | None:
    """A one-line message when the new tokens (plus the longest prompt, when known) do not fit the
    model's context, else None. Reads config.json only, so it runs before any weights load; a model
    that cannot be found is left to check_available, which says why."""
    if check_available(model_id, random_weights):
        return None
    try:
        config = load_config(model_id)
    except Exception:  # unreadable config: loading the model reports it properly later
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    context = getattr(text, "max_position_embeddings", None)
    if not isinstance(context, int) or context <= 0:
        return None
    prompt = prompt_tokens_max or 0
    if max_new_tokens + prompt <= context:
        return None
    plus = f" plus a prompt of up to {prompt_tokens_max} tokens" if prompt_tokens_max else ""
    fix = "lower max_new_tokens or prompt_length" if prompt_tokens_max else "lower max_new_tokens"
    key = "max_new_tokens"
    if prompt >= context:  # the prompt alone does not fit: that is the setting to change
        key, fix = "prompts", "shorten the prompts or set prompt_length"
    return (f"config key '{key}': {max_new_tokens} new tokens{plus} exceed {model_id}'s context of "
            f"{context} tokens (max_position_embeddings); {fix}")
