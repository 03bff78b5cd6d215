"""One function per decoding method, all with the signature (inputs, settings, engine, probe) -> Generation."""
from decoding.batched import batched
from decoding.beam_search import beam_search
from decoding.nucleus import nucleus
from decoding.prompt_lookup import prompt_lookup
from decoding.speculative import speculative
from decoding.standard import standard

METHODS = {
    "standard": standard,
    "nucleus": nucleus,
    "beam_search": beam_search,
    "batched": batched,
    "speculative": speculative,
    "prompt_lookup": prompt_lookup,
}
