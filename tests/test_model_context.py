"""The context guard reads max_position_embeddings from the config alone, before any weights load."""
from models.loading import check_context


def test_too_many_new_tokens_for_tiny_target():
    message = check_context("tiny/target", False, 20, 32768)
    assert message == ("config key 'max_new_tokens': 32768 new tokens plus a prompt of up to 20 tokens exceed "
                       "tiny/target's context of 4096 tokens (max_position_embeddings); "
                       "lower max_new_tokens or prompt_length")
    assert "4096" in check_context("tiny/target", False, None, 5000) and "prompt" not in check_context(
        "tiny/target", False, None, 5000).split(";")[0]


def test_what_fits_passes():
    assert check_context("tiny/target", False, 20, 4076) is None  # exactly the context
    assert check_context("tiny/target", False, None, 4096) is None
    assert check_context("tiny/target", False, 21, 4076) is not None


def test_shipped_config_with_random_weights_and_unknown_models():
    assert "40960" in check_context("Qwen/Qwen3-4B", True, 10000, 32768)
    assert check_context("Qwen/Qwen3-4B", True, 100, 32768) is None
    assert check_context("no/such-model-anywhere", False, 10, 10**6) is None  # check_available reports it
