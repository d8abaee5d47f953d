"""``vllm.general_plugins`` entry point (runs in every vLLM process)."""
from . import call_safely


def register() -> None:
    call_safely("vllm", "eagle3_plugin.vllm:register")
