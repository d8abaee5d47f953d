"""``sglang.srt.plugins`` entry point (runs in the launcher, engine and every scheduler process)."""
from . import call_safely


def register() -> None:
    call_safely("sglang", "eagle3_plugin.sglang:register")
