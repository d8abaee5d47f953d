"""A Qwen3-VL draft trained for vLLM's V2 runner (`--vllm-runner v2`: the running index as positions) served by the
V1 runner (the only one vLLM-CPU has) fails to load, with our message naming both runners and both fixes, instead of
silently losing acceptance on every image prompt. The V1-trained drafts of test_vllm_families.py are served by the
same engine, with the positions the trainer used (test_what_vllm_hands_the_draft_matches_the_trainer)."""
import os
import subprocess
import sys
import textwrap

from helpers import CACHE, random_draft, tiny

SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {helpers!r})
    from helpers import make_llm
    if __name__ == "__main__":
        try:
            make_llm({target!r}, {draft!r})
            print("RESULT loaded")
        except BaseException as e:
            print("RESULT failed", type(e).__name__)
""")


def test_a_v2_trained_draft_is_refused_by_the_v1_runner(tmp_path):
    target = tiny("qwen3_vl")
    draft = random_draft(target, CACHE / "draft-qwen3_vl-for-v2-runner", vllm_runner="v2")
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(helpers=os.path.dirname(__file__), target=str(target), draft=str(draft)))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    out = r.stdout + r.stderr
    assert "RESULT failed" in out and "RESULT loaded" not in out, out[-3000:]
    assert ("eagle3-plugin: this Qwen3-VL EAGLE-3 draft was trained on the positions vLLM's V2 model runner hands "
            "a draft ('1d'), but this engine runs the V1 runner") in out, out[-3000:]
    assert "VLLM_USE_V2_MODEL_RUNNER=1" in out and "--vllm-runner v1" in out
