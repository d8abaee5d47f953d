"""The competent vision targets (Qwen3-VL and HunyuanOCR readers) in real vLLM (CPU): served as users serve them,
they read held-out renders as well as they do in transformers, and an EAGLE-3 draft leaves their greedy answers token
for token unchanged."""
import random

import pytest

from eagle3_plugin import fixtures
from eagle3_plugin.devtools import reading
from helpers import CACHE, make_llm, random_draft, shutdown

BAR = 0.80
READERS = ("qwen3_vl-reader", "hunyuan_vl-reader")


@pytest.fixture(scope="module", params=READERS)
def answers(request):
    from vllm import SamplingParams
    from transformers import AutoProcessor
    target = fixtures.competent_target(request.param)
    proc = AutoProcessor.from_pretrained(str(target))
    rng = random.Random(99)
    texts = reading.eval_texts()
    inputs = [{"prompt": proc.apply_chat_template(reading.chat(reading.QUESTIONS[i % 3]), add_generation_prompt=True,
                                                  tokenize=False),
               "multi_modal_data": {"image": reading.render(t, rng)}} for i, t in enumerate(texts)]
    sp = SamplingParams(temperature=0, max_tokens=10)
    out = {"texts": texts, "reader": request.param}
    llm = make_llm(target, max_num_seqs=8)
    base = llm.generate(inputs, sp, use_tqdm=False)
    out["base"] = [list(o.outputs[0].token_ids) for o in base]
    out["base_text"] = [o.outputs[0].text.strip() for o in base]
    shutdown(llm)
    draft = random_draft(target, CACHE / f"draft-{request.param}-random")
    llm = make_llm(target, draft, k=3, max_num_seqs=8)
    out["spec"] = [list(o.outputs[0].token_ids) for o in llm.generate(inputs, sp, use_tqdm=False)]
    shutdown(llm)
    return out


def test_vllm_reads_held_out_text(answers):
    acc = [reading.char_accuracy(t, g) for t, g in zip(answers["texts"], answers["base_text"])]
    print(f"\n{answers['reader']} in vLLM, greedy: character accuracy {sum(acc) / len(acc):.1%} on {len(acc)} "
          "held-out renders")
    assert sum(acc) / len(acc) >= BAR


def test_eagle3_leaves_the_reader_s_answers_unchanged(answers):
    assert answers["spec"] == answers["base"]
