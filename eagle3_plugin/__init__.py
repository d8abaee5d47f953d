"""eagle3-plugin: EAGLE-3 speculative decoding for multimodal targets (Qwen3-VL, HunyuanOCR, Qwen2-Audio) in vLLM
and SGLang, plus the ``eagle3-train`` trainer whose drafts both engines load directly.

Importing this package is cheap and never imports an engine; registration happens through the entry points."""
__version__ = "0.1.0"
