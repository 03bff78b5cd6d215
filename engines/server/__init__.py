"""The `server` engine: any OpenAI-compatible HTTP server (vLLM, SGLang, TGI, llama.cpp, `transformers serve`),
measured from the outside under the load scenario, optionally started by the tool itself (`server_command`).

process.py starts, watches and stops such a server; session.py sends one load row's requests and reads the
streams; engine.py is the engine the registry names, which keeps one server up across the rows it serves.
"""
