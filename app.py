"""Decoding-methods benchmark. `python app.py --preset tiny` runs headless; `python app.py` opens the dashboard.
See README.md, or `python app.py --help` for every flag and config key."""
import os
import sys
import warnings

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
warnings.filterwarnings("ignore", category=UserWarning, module="transformers")

if __name__ == "__main__":
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    from bench.cli import main

    sys.exit(main())
