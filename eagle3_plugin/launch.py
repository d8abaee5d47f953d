"""Start a server as a subprocess on a free loopback port, wait for its health endpoint, stop it cleanly (the whole
process group). `vllm serve` here; the bench launches SGLang the same way. Used by the demo, the benchmarks and the
tests; a user can equally point those tools at their own server."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path



def on_cpu() -> bool:
    """vLLM's CPU backend: eager mode (its compiled mode spends minutes compiling); GPUs keep CUDA graphs."""
    import torch
    return not torch.cuda.is_available()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vllm_executable() -> str:
    exe = Path(sys.executable).with_name("vllm")
    return str(exe) if exe.exists() else "vllm"


class Subprocess:
    """A command in its own process group, its output in `log`, ready once `health_url` answers."""

    def __init__(self, cmd: list[str], log: str | os.PathLike, health_url: str, timeout: float = 300,
                 env: dict | None = None):
        self.cmd, self.log_path, self.health_url, self.timeout = cmd, Path(log), health_url, timeout
        self.env = {**os.environ, **(env or {})}

    def __enter__(self) -> "Subprocess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env=self.env)
        deadline = time.time() + self.timeout
        while True:
            try:
                urllib.request.urlopen(self.health_url, timeout=5)
                return self
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"{' '.join(self.cmd[:3])} ... did not start (log: {self.log_path}):\n"
                                       f"{self.log_path.read_text()[-3000:]}")
                time.sleep(1)

    def __exit__(self, *exc) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()


class VllmServer:
    """`vllm serve TARGET [--speculative-config ...]` with the family's media limits."""

    def __init__(self, target: str | os.PathLike, log: str | os.PathLike, draft: str | os.PathLike | None = None,
                 k: int = 3, extra: list[str] | None = None, served_name: str = "target", timeout: float = 300):
        self.target, self.log_path, self.draft, self.k = Path(target), Path(log), draft, k
        self.extra, self.served_name, self.timeout = extra or [], served_name, timeout

    def command(self, port: int) -> list[str]:
        from .families import family_for_target
        from .models import model_config
        limits = family_for_target(model_config(self.target)).engine_media_limits()
        cmd = [vllm_executable(), "serve", str(self.target), "--host", "127.0.0.1", "--port", str(port),
               "--served-model-name", self.served_name, "--dtype", "bfloat16"]
        if on_cpu():
            cmd.append("--enforce-eager")
        if limits:
            cmd += ["--limit-mm-per-prompt", json.dumps(limits)]
        if self.draft:
            cmd += ["--speculative-config", json.dumps({"method": "eagle3", "model": str(self.draft),
                                                        "num_speculative_tokens": self.k})]
        return cmd + self.extra

    def __enter__(self) -> "VllmServer":
        self.port = free_port()
        self._proc = Subprocess(self.command(self.port), self.log_path, f"http://127.0.0.1:{self.port}/health",
                                self.timeout).__enter__()
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __exit__(self, *exc) -> None:
        self._proc.__exit__(*exc)
