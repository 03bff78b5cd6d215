"""The methods axis: METHODS is the one list of decoding methods, in the order rows are measured.

Each file defines a function (inputs, settings, engine, probe) -> Generation and a `Method` spec
around it; to add a method, write its file and add one line here.
"""
from decoding import batched, beam_search, nucleus, prompt_lookup, speculative, standard, types, typical
from decoding.method import Method, with_options

# standard first: every other row's speedup is relative to it, so it is measured before them.
METHODS: dict[str, Method] = {m.METHOD.name: m.METHOD for m in (
    standard, nucleus, beam_search, batched, speculative, prompt_lookup, typical,
)}
BASELINE = "standard"

# The settings methods read: the shared ones plus the keys each method declares for itself.
Settings = with_options(types.SharedSettings, METHODS.values())
