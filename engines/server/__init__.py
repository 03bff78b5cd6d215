"""The `server` engine: any OpenAI-compatible HTTP server (vLLM, SGLang, TGI, llama.cpp, `transformers serve`),
measured from the outside under the load scenario, optionally started by the tool itself (`server_command`).

process.py starts, watches and stops such a server; spec.py reads what its command says it drafts; session.py
sends one load row's requests; stream.py reads one streamed response and counts its tokens; engine.py is the
engine the registry names, which keeps one server up across the rows it serves. What the server reports on
/metrics becomes columns in metrics/server_metrics.py.
"""
