"""bitsandbytes 4-bit (NF4) and 8-bit load and generate on the CPU, for real."""
import warnings

import pytest
import torch

from conftest import make_inputs
from decoding import METHODS
from decoding import Settings
from decoding.types import NullProbe
from engines.hf import HFEngine


@pytest.mark.parametrize("quantization, layer, weight_dtype", [
    ("bnb-4bit", "Linear4bit", torch.uint8),
    ("bnb-8bit", "Linear8bitLt", torch.int8),
])
def test_quantized_target_loads_and_generates(quantization, layer, weight_dtype):
    from models.loading import load_models

    warnings.filterwarnings("ignore", message=".*MatMul8bitLt.*")
    models = load_models("tiny/target", None, device="cpu", dtype="float32", quantization=quantization)
    proj = models.target.model.layers[0].mlp.up_proj
    assert type(proj).__name__ == layer and proj.weight.dtype == weight_dtype
    g = METHODS["standard"](make_inputs(models, [0]), Settings(max_new_tokens=8), HFEngine(models), NullProbe())
    assert g.new_tokens == [8]
    assert int(g.sequences.max()) < models.target.config.vocab_size
