"""Without our plugin (VLLM_PLUGINS naming only another plugin), the same Qwen2-Audio / HunyuanOCR EAGLE-3 runs
fail exactly the way upstream vLLM 0.32 fails: the plugin is what makes them work. The draft is in the published
layout (Eagle3LlamaForCausalLM, a built-in architecture), so what fails is target-side support, not our draft names;
the same draft layout is served successfully with the plugin in test_vllm_families.py (the full-acceptance pair)."""
import os
import subprocess
import sys
import textwrap

import pytest

from helpers import CACHE, random_draft, tiny

SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {helpers!r})
    from helpers import make_llm
    if __name__ == "__main__":
        try:
            llm = make_llm({target!r}, {draft!r})
            from vllm import SamplingParams
            from helpers import chat_prompts
            llm.chat(chat_prompts({family!r}, 1), SamplingParams(temperature=0, max_tokens=4))
            print("RESULT ran")
        except BaseException as e:
            print("RESULT failed", type(e).__name__, e)
""")

# the upstream failure each family hits first without the plugin
UPSTREAM = {"qwen2_audio": "'Qwen2AudioConfig' object has no attribute 'image_token_index'",
            "hunyuan_vl": "'HunYuanVLConfig' object has no attribute 'image_token_index'"}


@pytest.mark.parametrize("family", ["qwen2_audio", "hunyuan_vl"])
def test_without_plugin_upstream_failure_reappears(family, tmp_path):
    target = tiny(family)
    draft = random_draft(target, CACHE / f"draft-const-published-{family}", const=True, published_layout=True)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(helpers=os.path.dirname(__file__), target=str(target), draft=str(draft),
                                    family=family))
    env = {**os.environ, "VLLM_PLUGINS": "lora_filesystem_resolver", "VLLM_CPU_KVCACHE_SPACE": "1"}
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    out = r.stdout + r.stderr
    assert "RESULT ran" not in out
    assert UPSTREAM[family] in out, out[-3000:]
