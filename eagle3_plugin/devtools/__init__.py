"""Developer tools, not the trainer or the plugin: tiny real targets built offline (tiny.py), their text-stack
pretraining (pretrain.py), the whole product path in one call (pipeline.py) and `eagle3-train demo` (demo.py)."""
