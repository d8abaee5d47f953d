"""eagle3-train: the compact EAGLE-3 draft trainer (installed as ``eagle3_plugin.trainer``)."""
