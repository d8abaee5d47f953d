"""Qwen3-VL in SGLang: native EAGLE-3 capture since 0.5.11 (deepstack added before capture, as our trainer does);
the draft gets the target's M-RoPE ids because its config declares ``mrope_section``. Only checked, never patched."""
from __future__ import annotations

from ..compat import Report
from ..families import FAMILIES

FAMILY = FAMILIES["qwen3_vl"]
ARCH = FAMILY.hf_architectures[0]
TARGET_ITEM = f"target {ARCH}"


def _check_target(module, report: Report) -> None:
    cls = getattr(module, ARCH, None)
    if cls is not None and hasattr(cls, "set_eagle3_layers_to_capture") and hasattr(cls, "get_embed_and_head"):
        report.add(TARGET_ITEM, "native", "SGLang implements EAGLE-3 capture")
    else:
        report.add(TARGET_ITEM, "skipped", "SGLang's Qwen3-VL lacks set_eagle3_layers_to_capture / get_embed_and_head")


ITEMS = (("sglang.srt.models.qwen3_vl", TARGET_ITEM, _check_target),)
