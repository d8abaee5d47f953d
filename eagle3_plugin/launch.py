"""Start `vllm serve` as a subprocess on a free loopback port and stop it cleanly (the whole process group).
Used by the demo, the benchmarks and the tests; a user can equally point those tools at their own server."""
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

MEDIA_LIMITS = {"text": None, "qwen3_vl": {"image": 1, "video": 0}, "hunyuan_vl": {"image": 1},
                "qwen2_audio": {"audio": 1}}


def vllm_executable() -> str:
    exe = Path(sys.executable).with_name("vllm")
    return str(exe) if exe.exists() else "vllm"


class VllmServer:
    def __init__(self, target: str | os.PathLike, log: str | os.PathLike, draft: str | os.PathLike | None = None,
                 k: int = 3, extra: list[str] | None = None, served_name: str = "target", timeout: float = 300):
        self.target, self.log_path, self.draft, self.k = Path(target), Path(log), draft, k
        self.extra, self.served_name, self.timeout = extra or [], served_name, timeout

    def command(self) -> list[str]:
        from .families import family_for_target
        fam = family_for_target(json.loads((self.target / "config.json").read_text())).name
        cmd = [vllm_executable(), "serve", str(self.target), "--host", "127.0.0.1", "--port", str(self.port),
               "--served-model-name", self.served_name]
        if MEDIA_LIMITS[fam]:
            cmd += ["--limit-mm-per-prompt", json.dumps(MEDIA_LIMITS[fam])]
        if self.draft:
            cmd += ["--speculative-config", json.dumps({"method": "eagle3", "model": str(self.draft),
                                                        "num_speculative_tokens": self.k})]
        return cmd + self.extra

    def __enter__(self) -> "VllmServer":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.command(), stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, env={**os.environ})
        deadline = time.time() + self.timeout
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5)
                return self
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"vllm serve did not start (log: {self.log_path}):\n"
                                       f"{self.log_path.read_text()[-3000:]}")
                time.sleep(1)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

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
