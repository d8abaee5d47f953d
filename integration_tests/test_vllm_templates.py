"""A panel of chat templates, served by real vLLM CPU engines with the pretrained tiny text target
(eagle3_plugin/fixtures/templates/*.jinja; strict_roles is an error case, covered by tests/test_render.py).

For each template (thinking twice: enable_thinking true and false, as chat_template_kwargs), on its own prompts:
  A. the token ids the trainer renders for a prompt (render.ChatRenderer through data.Tokenizer) equal the
     `prompt_token_ids` vLLM's `LLM.chat` produced for the same messages, for every training and held-out prompt
     (seed-format list content for half of them, plain strings for the other half), and the samples the trainer
     builds from the regenerated jsonl are exactly those prompt ids followed by the tokens vLLM generated;
  B. a draft trained on that jsonl with that template (`eagle3-train train --chat-template FILE`) reaches, in vLLM
     with the same template, a held-out acceptance length within 10% of the trainer's own simulated one
     (config.json's eagle3_plugin.eval_sim_al_k3) on the same held-out conversations: vLLM's greedy answers to the
     held-out prompts, given to the trainer as --eval-data.

Engines, one at a time: one target-only engine generates every template's data (greedy, 48 tokens); one engine
with a draft then serves all the drafts. It starts with the first template's draft (loaded by vLLM as usual) and
swaps each other draft's weights in through a worker extension doing what vLLM's own draft weight update does (a
layerwise reload in checkpoint format: the CPU backend repacks linear weights at load), then resets the prefix
cache (cached prompt blocks hold the previous draft's KV). The swap is checked: all drafts have the same config
(full vocab, same aux layers), an untrained draft swapped in accepts far less, and the first draft swapped back
reproduces its fresh-load run count for count. One engine instead of nine keeps the file at a few minutes.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from helpers import DRAFT_SWAP, make_llm, shutdown, swap_draft, tiny

from eagle3_plugin import fixtures

TEMPLATES = Path(fixtures.__file__).resolve().parent / "templates"
PANEL = sorted(p.stem for p in TEMPLATES.glob("*.jinja") if p.stem != "strict_roles")
# label -> (template, chat_template_kwargs). thinking: enable_thinking true renders no <think> in the prompt (the
# tiny target writes none either), only in answered turns; false puts an empty <think>\n\n</think> block into every
# generation prompt, so it is served too: the one case where the kwargs change the prompt ids.
VARIANTS = {name: (name, {"enable_thinking": True} if name == "thinking" else None) for name in PANEL}
VARIANTS["thinking_off"] = ("thinking", {"enable_thinking": False})
NAMES = list(VARIANTS)
# trained with render_check=2 (vLLM's own renderer at start-up: openai content format; template kwargs); others 0
RENDER_CHECKED = ("list_aware", "thinking_off")
N_TRAIN, N_HELD = 60, 12
MAX_TOKENS, K = 48, 3
STEPS = 250
GAP = 0.10
SEEDS = {name: (10 + i, 200 + i) for i, name in enumerate(NAMES)}    # prompt_set seeds: (training, held-out)
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


# ------------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def panel(tmp_path_factory):
    yield generate(_target(), tmp_path_factory.mktemp("templates"))


@pytest.fixture(scope="module")
def served(panel):
    yield train_and_serve(panel)


def generate(target: Path, work: Path) -> dict:
    """One target-only engine: per template, greedy answers to the training and held-out prompts (prompt ids and
    generated ids as vLLM reports them), and the training conversations as a regenerated seed-format jsonl."""
    from vllm import SamplingParams
    t = time.perf_counter()
    llm = make_llm(target)
    res = {"target": target, "work": work}
    try:
        for name in NAMES:
            stem, kw = VARIANTS[name]
            tpath = TEMPLATES / f"{stem}.jinja"
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
            held_jsonl = work / f"{name}.held.jsonl"
            with open(held_jsonl, "w") as f:  # the served held-out prompts with vLLM's answers: the trainer's eval set
                for i, (m, o) in enumerate(zip(held_msgs, outs[N_TRAIN:])):
                    f.write(json.dumps({"id": f"{name}-held-{i:03d}", "conversations": [
                        *m, {"role": "assistant", "content": [{"type": "text", "text": o.outputs[0].text}],
                             "token_ids": gen_ids[N_TRAIN + i]}]}) + "\n")
            res[name] = {"template": tpath, "kwargs": kw, "train_msgs": train_msgs, "held_msgs": held_msgs,
                         "train_prompt_ids": prompt_ids[:N_TRAIN], "train_gen_ids": gen_ids[:N_TRAIN],
                         "held_prompt_ids": prompt_ids[N_TRAIN:], "held_gen_ids": gen_ids[N_TRAIN:],
                         "prompt_text": outs[0].prompt, "jsonl": jsonl, "held_jsonl": held_jsonl}
    finally:
        shutdown(llm)
    print(f"\n[templates] generation engine: {time.perf_counter() - t:.0f} s")
    return res


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


def _untrained_draft(target: Path, out: Path) -> Path:
    """A draft as the trainer initialises it, before any step (what pipeline() serves as "untrained")."""
    from safetensors.torch import load_file
    from eagle3_plugin.checkpoint import save_draft
    from eagle3_plugin.models import model_config
    from eagle3_plugin.trainer.draft import init_draft
    sd = load_file(str(target / "model.safetensors"))
    embed = next(v for k, v in sd.items() if k.endswith("embed_tokens.weight"))
    d = init_draft(model_config(target), embed, seed=0)
    save_draft(out, d.cfg, d.checkpoint_tensors())
    return out


def train_and_serve(panel: dict) -> dict:
    """Per template: a draft trained on its jsonl with its template, then all drafts served in one vLLM engine."""
    from unittest import mock
    from eagle3_plugin.trainer import source
    from eagle3_plugin.trainer.config import TrainConfig
    from eagle3_plugin.trainer.loop import train
    target, work = panel["target"], panel["work"]
    res: dict = {}
    for name in NAMES:
        v = panel[name]
        t = time.perf_counter()
        out = work / f"draft-{name}"
        checks: list = []      # what the start-up render check (render_check=N) compared, to show it ran

        def spy(*a, _real=source.check_data, _checks=checks, **kw):
            _checks.append(_real(*a, **kw))
            return _checks[-1]

        with mock.patch.object(source, "check_data", spy):
            result = train(TrainConfig(
                target=str(target), data=str(v["jsonl"]), eval_data=str(v["held_jsonl"]), output=str(out),
                chat_template=str(v["template"]),
                chat_template_kwargs=json.dumps(v["kwargs"]) if v["kwargs"] else None, max_steps=STEPS,
                eval_every=STEPS, save_every=STEPS, ttt_steps=K, progress=False,
                render_check=2 if name in RENDER_CHECKED else 0))
        cfg = json.loads((out / "config.json").read_text())
        res[name] = {"draft": out, "result": result, "config": cfg, "render_checks": checks,
                     "sim": cfg["eagle3_plugin"]["eval_sim_al_k3"], "train_s": time.perf_counter() - t}
        print(f"[templates] {name}: trained in {res[name]['train_s']:.0f} s, simulated AL(k=3) {res[name]['sim']}")

    untrained = _untrained_draft(target, work / "draft-untrained")
    res["untrained_config"] = json.loads((untrained / "config.json").read_text())

    t = time.perf_counter()
    first = NAMES[0]
    llm = make_llm(target, res[first]["draft"], k=K, worker_extension_cls=DRAFT_SWAP)
    try:
        res[first].update(_served_chat(llm, panel[first]))      # the draft vLLM loaded itself
        swap_draft(llm, untrained)                               # a swap takes effect ...
        res["untrained"] = _served_chat(llm, panel[first])
        swap_draft(llm, res[first]["draft"])                     # ... and serves as freshly loaded
        res["swapped_back"] = _served_chat(llm, panel[first])
        for name in NAMES[1:]:
            swap_draft(llm, res[name]["draft"])
            res[name].update(_served_chat(llm, panel[name]))
    finally:
        shutdown(llm)
    print(f"[templates] draft engine: {time.perf_counter() - t:.0f} s")
    print("[templates] template           trainer sim AL   vLLM AL   gap")
    for name in NAMES:
        r = res[name]
        eng = r["spec"].acceptance_length()
        r["engine"], r["gap"] = eng, abs(eng - r["sim"]) / r["sim"]
        print(f"[templates] {name:18s} {r['sim']:14.3f} {eng:9.3f} {r['gap']:6.1%}")
    al_u = res["untrained"]["spec"].acceptance_length()
    print(f"[templates] untrained draft on {first}'s held-out prompts: AL {al_u:.3f}")
    print(f"[templates] fixtures done after {time.perf_counter() - T0:.0f} s")
    return res


# ------------------------------------------------------------------------------------------------------ tests
def test_heldout_prompts_are_not_training_prompts(panel):
    for name in NAMES:
        v = panel[name]
        train = {_text(m) for m in v["train_msgs"]}
        held = [_text(m) for m in v["held_msgs"]]
        assert len(held) == N_HELD and len(train) == N_TRAIN
        assert not train & set(held), f"{name}: held-out prompts also in training"
        assert any(isinstance(m[0]["content"], str) for m in v["train_msgs"])
        assert any(isinstance(m[0]["content"], list) for m in v["train_msgs"])


@pytest.mark.parametrize("name", NAMES)
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

    if VARIANTS[name][0] == "thinking":
        # the template writes an answered turn with a <think> block the target never generated: the samples must
        # hold the generated tokens (token_ids), not the template's rendering of the answer
        answered = v["train_msgs"][0] + [{"role": "assistant", "content": "x"}]
        assert "<think>" in tok.renderer.render(answered)
        assert not any("<think>" in tok.tokenizer.decode(g) for g in v["train_gen_ids"])
        # enable_thinking false: vLLM's prompts end with the empty think block, and so do the trainer's
        assert v["prompt_text"].endswith("<think>\n\n</think>\n\n") == (name == "thinking_off")


def test_swapped_in_draft_is_served_like_a_freshly_loaded_one(served):
    """The weight swap the draft engine relies on: the drafts differ in weights only; swapping in an untrained draft
    changes what is accepted; swapping the first draft back reproduces its fresh-load run count for count."""
    def arch(cfg):
        return {k: v for k, v in cfg.items() if k != "eagle3_plugin"}
    cfgs = [arch(served[n]["config"]) for n in NAMES] + [arch(served["untrained_config"])]
    assert all(c == cfgs[0] for c in cfgs), "drafts differ in config: a weight swap would not be a fair stand-in"
    first, back, untrained = served[NAMES[0]], served["swapped_back"], served["untrained"]
    assert untrained["tokens"] == first["tokens"] == back["tokens"]
    assert untrained["spec"].acceptance_length() < first["spec"].acceptance_length() - 0.8
    assert (back["spec"].verifies, back["spec"].accepted, back["spec"].per_pos, back["spec"].histogram) == \
        (first["spec"].verifies, first["spec"].accepted, first["spec"].per_pos, first["spec"].histogram)


@pytest.mark.parametrize("name", NAMES)
def test_engine_acceptance_matches_trainer_simulation(panel, served, name):
    v, r = panel[name], served[name]
    assert r["prompt_ids"] == v["held_prompt_ids"]
    assert r["tokens"] == v["held_gen_ids"], "the draft changed the greedy output"
    assert r["result"]["best_eval_sim_al_k3"] == pytest.approx(r["sim"], abs=1e-4)
    if name in RENDER_CHECKED:     # the trainer compared 2 conversations with vLLM's own renderer: all the same
        assert len(r["render_checks"]) == 1 and len(r["render_checks"][0]) == 2
        assert all(c.difference is None for c in r["render_checks"][0])
    else:
        assert r["render_checks"] == []
    spec = r["spec"]
    assert spec.verifies > 0 and spec.proposed == K * spec.verifies
    print(f"\n[{name}] trainer simulated AL(k=3) {r['sim']:.3f}, vLLM held-out AL {r['engine']:.3f} "
          f"(per position {[round(x, 3) for x in spec.acceptance_per_position()]}), gap {r['gap']:.1%}")
    assert r["engine"] >= 1.3, "no better than an untrained draft"
    assert r["gap"] <= GAP
