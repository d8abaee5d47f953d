"""A panel of chat templates, served by real vLLM CPU engines with the pretrained tiny text target
(eagle3_plugin/fixtures/templates/*.jinja; strict_roles is an error case, covered by tests/test_render.py).

For each template (thinking: with enable_thinking true, passed as chat_template_kwargs):
  A. the token ids the trainer renders for a prompt (render.ChatRenderer through data.Tokenizer) equal the
     `prompt_token_ids` vLLM's `LLM.chat` produced for the same messages, for every training and held-out prompt
     (seed-format list content for half of them, plain strings for the other half), and the samples the trainer
     builds from the regenerated jsonl are exactly those prompt ids followed by the tokens vLLM generated;
  B. a draft trained on that jsonl with that template (`eagle3-train train --chat-template FILE`) reaches, in vLLM
     with the same template, a held-out acceptance length within 10% of the trainer's own simulated one.

Engines, one at a time: one target-only engine generates every template's data (greedy, 48 tokens); one engine
with a draft then serves all the drafts. It starts with the first template's draft (loaded by vLLM as usual) and
swaps each next draft's weights in (the draft's own `load_weights`, through a worker extension, prefix cache
reset); at the end the first draft is swapped back in and must reproduce its first measurement count for count,
which shows a swapped-in draft is served exactly as a freshly loaded one. All drafts of one target have the same
config (full vocab, same aux layers), so only weights differ. This keeps the file at a few minutes.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from helpers import make_llm, shutdown, tiny

from eagle3_plugin import fixtures

TEMPLATES = Path(fixtures.__file__).resolve().parent / "templates"
PANEL = sorted(p.stem for p in TEMPLATES.glob("*.jinja") if p.stem != "strict_roles")
KWARGS = {"thinking": {"enable_thinking": True}}       # chat_template_kwargs per template
RENDER_CHECKED = "list_aware"      # trained with render_check=2 (vLLM's own renderer at start-up); others 0 (time)
N_TRAIN, N_HELD = 60, 12
MAX_TOKENS, K = 48, 3
STEPS = 250
GAP = 0.10
SEEDS = {name: (10 + i, 200 + i) for i, name in enumerate(PANEL)}    # prompt_set seeds: (training, held-out)
T0 = time.perf_counter()


def _target() -> Path:
    # exactly the spec pipeline("text") builds (PipelineConfig.pretrain_steps=200, no overrides): no new pretraining
    return tiny("text", pretrain_steps=200)


def _messages(rows: list[dict]) -> list[list[dict]]:
    """One user turn per prompt: seed-format list content for even rows, the same text as a plain string for odd."""
    out = []
    for i, r in enumerate(rows):
        content = r["conversations"][0]["content"]
        if i % 2:
            content = "\n".join(p["text"] for p in content)
        out.append([{"role": "user", "content": content}])
    return out


def _text(msgs: list[dict]) -> str:
    c = msgs[0]["content"]
    return c if isinstance(c, str) else "\n".join(p["text"] for p in c)


class DraftSwap:
    """vLLM worker extension (worker_extension_cls): load another draft's weights into the running draft model."""

    def eagle3_load_draft(self, path: str) -> int:
        from safetensors.torch import load_file
        sd = load_file(os.path.join(path, "model.safetensors"))
        self.model_runner.drafter.model.load_weights(sd.items())
        return len(sd)


# ------------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def panel(tmp_path_factory):
    """One target-only engine: per template, greedy answers to the training and held-out prompts (prompt ids and
    generated ids as vLLM reports them), and the training conversations as a regenerated seed-format jsonl."""
    from vllm import SamplingParams
    target = _target()
    work = tmp_path_factory.mktemp("templates")
    t = time.perf_counter()
    llm = make_llm(target)
    res = {"target": target, "work": work}
    try:
        for name in PANEL:
            tpath = TEMPLATES / f"{name}.jinja"
            kw = KWARGS.get(name)
            s_train, s_held = SEEDS[name]
            train_msgs = _messages(fixtures.prompt_set(N_TRAIN, "text", seed=s_train))
            held_msgs = _messages(fixtures.prompt_set(N_HELD, "text", seed=s_held))
            outs = llm.chat(train_msgs + held_msgs, SamplingParams(temperature=0, max_tokens=MAX_TOKENS),
                            chat_template=tpath.read_text(), chat_template_kwargs=kw, use_tqdm=False)
            prompt_ids = [list(o.prompt_token_ids) for o in outs]
            gen_ids = [list(o.outputs[0].token_ids) for o in outs]
            jsonl = work / f"{name}.regen.jsonl"
            with open(jsonl, "w") as f:      # what `eagle3-train regenerate` writes: the answer with its token ids
                for i, (m, o) in enumerate(zip(train_msgs, outs[:N_TRAIN])):
                    f.write(json.dumps({"id": f"{name}-{i:03d}", "conversations": [
                        *m, {"role": "assistant", "content": [{"type": "text", "text": o.outputs[0].text}],
                             "token_ids": gen_ids[i]}]}) + "\n")
            res[name] = {"template": tpath, "kwargs": kw, "train_msgs": train_msgs, "held_msgs": held_msgs,
                         "train_prompt_ids": prompt_ids[:N_TRAIN], "train_gen_ids": gen_ids[:N_TRAIN],
                         "held_prompt_ids": prompt_ids[N_TRAIN:], "held_gen_ids": gen_ids[N_TRAIN:],
                         "prompt_text": outs[0].prompt, "jsonl": jsonl}
    finally:
        shutdown(llm)
    print(f"\n[templates] generation engine: {time.perf_counter() - t:.0f} s")
    yield res


def _served_chat(llm, v: dict) -> dict:
    """The held-out prompts through llm.chat with the template, counted with the product bench's own helpers."""
    from vllm import SamplingParams
    from eagle3_plugin.bench.vllm_offline import counts_between, engine_counters
    before = engine_counters(llm)
    outs = llm.chat(v["held_msgs"], SamplingParams(temperature=0, max_tokens=MAX_TOKENS),
                    chat_template=v["template"].read_text(), chat_template_kwargs=v["kwargs"], use_tqdm=False)
    after = engine_counters(llm)
    return {"spec": counts_between(before, after, K, outs), "tokens": [list(o.outputs[0].token_ids) for o in outs],
            "prompt_ids": [list(o.prompt_token_ids) for o in outs]}


@pytest.fixture(scope="module")
def served(panel):
    """Per template: a draft trained on its jsonl with its template, then all drafts served in one vLLM engine."""
    from eagle3_plugin.trainer.config import TrainConfig
    from eagle3_plugin.trainer.loop import train
    target, work = panel["target"], panel["work"]
    res: dict = {}
    for name in PANEL:
        v = panel[name]
        t = time.perf_counter()
        out = work / f"draft-{name}"
        result = train(TrainConfig(
            target=str(target), data=str(v["jsonl"]), output=str(out), chat_template=str(v["template"]),
            chat_template_kwargs=json.dumps(v["kwargs"]) if v["kwargs"] else None, max_steps=STEPS,
            eval_every=STEPS, save_every=STEPS, ttt_steps=K, eval_fraction=0.1, progress=False,
            render_check=2 if name == RENDER_CHECKED else 0))
        cfg = json.loads((out / "config.json").read_text())
        res[name] = {"draft": out, "result": result, "config": cfg,
                     "sim": cfg["eagle3_plugin"]["eval_sim_al_k3"], "train_s": time.perf_counter() - t}
        print(f"[templates] {name}: trained in {res[name]['train_s']:.0f} s, simulated AL(k=3) {res[name]['sim']}")

    t = time.perf_counter()
    first = PANEL[0]
    llm = make_llm(target, res[first]["draft"], k=K, worker_extension_cls=f"{__name__}.DraftSwap")
    try:
        for name in PANEL:
            if name != first:
                llm.collective_rpc("eagle3_load_draft", args=(str(res[name]["draft"]),))
                llm.reset_prefix_cache()     # the draft's KV of cached prompt blocks came from the previous draft
            res[name].update(_served_chat(llm, panel[name]))
        llm.collective_rpc("eagle3_load_draft", args=(str(res[first]["draft"]),))
        llm.reset_prefix_cache()
        res["swapped_back"] = _served_chat(llm, panel[first])
    finally:
        shutdown(llm)
    print(f"[templates] draft engine: {time.perf_counter() - t:.0f} s")
    print("[templates] template           trainer sim AL   vLLM AL   gap")
    for name in PANEL:
        r = res[name]
        eng = r["spec"].acceptance_length()
        r["engine"], r["gap"] = eng, abs(eng - r["sim"]) / r["sim"]
        print(f"[templates] {name:18s} {r['sim']:14.3f} {eng:9.3f} {r['gap']:6.1%}")
    print(f"[templates] fixtures done after {time.perf_counter() - T0:.0f} s")
    yield res


# ------------------------------------------------------------------------------------------------------ tests
def test_heldout_prompts_are_not_training_prompts(panel):
    for name in PANEL:
        v = panel[name]
        train = {_text(m) for m in v["train_msgs"]}
        held = [_text(m) for m in v["held_msgs"]]
        assert len(held) == N_HELD and len(train) == N_TRAIN
        assert not train & set(held), f"{name}: held-out prompts also in training"
        assert any(isinstance(m[0]["content"], str) for m in v["train_msgs"])
        assert any(isinstance(m[0]["content"], list) for m in v["train_msgs"])


@pytest.mark.parametrize("name", PANEL)
def test_trainer_renders_the_prompts_vllm_served(panel, name):
    from eagle3_plugin.families import FAMILIES
    from eagle3_plugin.trainer.data import Tokenizer, load_samples
    from eagle3_plugin.trainer.render import first_difference
    v = panel[name]
    tok = Tokenizer(panel["target"], FAMILIES["text"], chat_template=str(v["template"]),
                    chat_template_kwargs=v["kwargs"])
    print(f"\n[{name}] content format {tok.renderer.content_format}; prompt {v['prompt_text']!r}")
    for split in ("train", "held"):
        for i, (msgs, ids) in enumerate(zip(v[f"{split}_msgs"], v[f"{split}_prompt_ids"])):
            ours = tok.renderer.prompt_ids(msgs, add_generation_prompt=True)
            assert ours == ids, f"{name} {split} prompt {i}: {first_difference(ours, ids, tok.tokenizer)}"

    samples = load_samples(v["jsonl"], tok, 2048, progress=False)
    assert len(samples) == N_TRAIN
    for i, (s, p, g) in enumerate(zip(samples, v["train_prompt_ids"], v["train_gen_ids"])):
        assert s.input_ids.tolist() == p + g, f"{name} sample {i}: {first_difference(s.input_ids.tolist(), p + g)}"
        assert s.loss_mask.tolist() == [False] * len(p) + [True] * len(g)

    if name == "thinking":
        # the template writes an answered turn with a <think> block the target never generated: the samples must
        # hold the generated tokens (token_ids), not the template's rendering of the answer
        answered = v["train_msgs"][0] + [{"role": "assistant", "content": "x"}]
        assert "<think>" in tok.renderer.render(answered)
        assert not any("<think>" in tok.tokenizer.decode(g) for g in v["train_gen_ids"])


def test_swapped_in_draft_is_served_like_a_freshly_loaded_one(served):
    first, back = served[PANEL[0]], served["swapped_back"]
    assert back["tokens"] == first["tokens"]
    assert (back["spec"].verifies, back["spec"].accepted, back["spec"].per_pos) == \
        (first["spec"].verifies, first["spec"].accepted, first["spec"].per_pos)
    cfgs = [{k: v for k, v in served[n]["config"].items() if k != "eagle3_plugin"} for n in PANEL]
    assert all(c == cfgs[0] for c in cfgs), "drafts differ in config: a weight swap would not be a fair stand-in"


@pytest.mark.parametrize("name", PANEL)
def test_engine_acceptance_matches_trainer_simulation(panel, served, name):
    v, r = panel[name], served[name]
    assert r["prompt_ids"] == v["held_prompt_ids"]
    assert r["tokens"] == v["held_gen_ids"], "the draft changed the greedy output"
    assert r["result"]["best_eval_sim_al_k3"] == pytest.approx(r["sim"], abs=1e-4)
    spec = r["spec"]
    assert spec.verifies > 0 and spec.proposed == K * spec.verifies
    print(f"\n[{name}] trainer simulated AL(k=3) {r['sim']:.3f}, vLLM held-out AL {r['engine']:.3f} "
          f"(per position {[round(x, 3) for x in spec.acceptance_per_position()]}), gap {r['gap']:.1%}")
    assert r["engine"] >= 1.3, "no better than an untrained draft"
    assert r["gap"] <= GAP
