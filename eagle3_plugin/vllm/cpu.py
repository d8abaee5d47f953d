"""vLLM CPU fix: oneDNN linears require a contiguous last dimension.

On the CPU platform unquantized linears dispatch to ``ops.onednn_mm``, which asserts ``x.stride(-1) == 1``.
HunYuanVL's vision patch merger (run by the Transformers backend with vLLM linears swapped in) feeds a permuted,
non-contiguous tensor, so the first image request dies with "Expected a.stride(-1) == 1". GPU F.linear accepts it.
``dispatch_unquantized_gemm`` looks ``cpu_unquantized_gemm`` up at call time, so wrapping it at plugin load is
early enough.
"""
from __future__ import annotations

from ..compat import Report, missing

NAME = "cpu-contiguous-gemm"


def register_cpu_fixes(report: Report) -> None:
    try:
        from vllm.platforms import current_platform
        if not current_platform.is_cpu():
            return
    except Exception as e:  # noqa: BLE001
        report.add(NAME, "skipped", f"cannot query the vLLM platform: {e}")
        return
    problem = missing("vllm.model_executor.layers.utils", "cpu_unquantized_gemm", "dispatch_unquantized_gemm")
    if problem:
        report.add(NAME, "skipped", problem)
        return
    import vllm.model_executor.layers.utils as u
    if not getattr(u.cpu_unquantized_gemm, "_eagle3_contiguous", False):
        inner = u.cpu_unquantized_gemm

        def cpu_unquantized_gemm(layer, x, weight, bias=None):
            if x.dim() > 0 and x.stride(-1) != 1:
                x = x.contiguous()
            return inner(layer, x, weight, bias)

        cpu_unquantized_gemm._eagle3_contiguous = True
        u.cpu_unquantized_gemm = cpu_unquantized_gemm
    report.add(NAME, "registered")
