"""The `server` engine the registry names: it serves only under the load scenario, starting server_command[i]
when a row needs it (and stopping the one before), so one server serves every load point of its command."""
from __future__ import annotations

from pathlib import Path

from decoding.types import UnsupportedSetting
from engines.server.process import ServerFailed, ServerProcess, free_port
from engines.server.session import ServerSession
from engines.server.spec import server_drafting


class ServerEngine:
    """ServerEngine(models, **its config keys) (engines/__init__.py: endpoint, served_model, api, api_key_env,
    server_command, server_start_timeout_s); sessions read them from here."""

    name = "server"

    def __init__(self, models, endpoint: str | None = None, served_model: str | None = None,
                 api: str = "completions", api_key_env: str = "OPENAI_API_KEY", server_command: list | None = None,
                 server_start_timeout_s: float = 600.0):
        self.models = models
        self.endpoint_url, self.served_model, self.api, self.api_key_env = endpoint, served_model, api, api_key_env
        self.server_command, self.start_timeout_s = list(server_command or []), server_start_timeout_s
        self.process: ServerProcess | None = None
        self.running: int | None = None  # which server_command is up
        self.endpoints: dict[int, str] = {}
        self.commands: dict[int, str] = {}  # the command lines that really ran ({port}, {model} filled in)
        self.drafting: dict[int, dict] = {}  # what each command's server drafts (engines/server/spec.py)
        self.failed: dict[int, str] = {}

    def generate(self, request, probe):
        raise UnsupportedSetting("engine 'server' runs under the load scenario: set concurrency or request_rate")

    def endpoint(self, config, index: int, run_id: str) -> str:
        """The endpoint of server_command[index], starting it (and stopping another) as needed."""
        if index < 0:
            return self.endpoint_url
        if index in self.failed:
            raise ServerFailed(self.failed[index])
        if self.running == index and self.process is not None:
            if (code := self.process.exited()) is not None:
                self.failed[index] = f"server exited with code {code} during the run: {self.process.tail()}"
                raise ServerFailed(self.failed[index])
            return self.endpoints[index]
        self.close()
        port = free_port()
        from models.loading import model_source

        command = self.server_command[index].replace("{port}", str(port)).replace(
            "{model}", model_source(config.model))
        endpoint = (self.endpoint_url or "http://127.0.0.1:{port}/v1").replace("{port}", str(port))
        self.commands[index], self.drafting[index] = command, server_drafting(command)
        log = Path(config.results).with_name(f"server-{run_id}-{index + 1}.log")
        process = ServerProcess(command, log)
        try:
            process.start(endpoint, self.start_timeout_s)
        except ServerFailed as e:
            process.stop()
            self.failed[index] = str(e)
            raise
        self.process, self.running, self.endpoints[index] = process, index, endpoint
        return endpoint

    def endpoint_for(self, job) -> str:
        index = job.point.load.server
        return self.endpoints.get(index, "") if index >= 0 else (self.endpoint_url or "")

    def check_alive(self, index: int) -> None:
        if index >= 0 and self.process is not None and (code := self.process.exited()) is not None:
            self.failed[index] = f"server exited with code {code} during the run: {self.process.tail()}"
            raise ServerFailed(self.failed[index])

    def session(self, job, template) -> "ServerSession":
        if template.logits_options:
            names = ", ".join(k for k, _ in template.logits_options)
            raise UnsupportedSetting(f"{names} is no OpenAI-compatible request parameter: run {job.point.method} "
                                     "on an in-process engine")
        return ServerSession(self, job, template)

    def close(self) -> None:
        if self.process is not None:
            self.process.stop()
        self.process, self.running = None, None
