"""Tiny but real target checkpoints, built offline: random weights, a BPE tokenizer trained here with `tokenizers`,
the family's real processor class, chat template and generation config. They load in transformers and in vLLM.

    build_tiny_target("qwen3_vl", "out/tiny-qwen3vl", seed=0)

Families: text (Qwen3), qwen3_vl, hunyuan_vl (HunyuanOCR tokens and XD-RoPE config), qwen2_audio.
Text stacks default to 8 layers (the default aux ids (2, L//2, L-3) must be distinct); media towers use a different
depth (vLLM's Transformers backend finds decoder layers by list length). head_dim >= 32 (vLLM CPU attention).
Everything is deterministic for a given spec. ``pretrain_steps`` > 0 trains the text stack on the bundled corpus
so the target writes structured text (a random target's greedy text is noise, which no draft can predict).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ..fixtures import corpus_text



@dataclass(frozen=True)
class TinySpec:
    family: str
    hidden_size: int = 128
    num_layers: int = 8
    intermediate_size: int = 256
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 32
    vocab_size: int = 1024
    tower_layers: int = 2
    seed: int = 0
    pretrain_steps: int = 0
    pretrain_seq_len: int = 128
    max_position_embeddings: int = 4096
    variant: str = ""     # "" = the family's default builder; "llama" = the second text target (text family only)
    audio_seconds: int = 30   # qwen2_audio: the feature extractor's window (Qwen2-Audio's own is 30 s)

    def key(self) -> str:
        d = asdict(self)
        for name in ("variant", "audio_seconds"):
            if d[name] == TinySpec.__dataclass_fields__[name].default:
                d.pop(name)           # existing specs keep their keys (and cache folders)
        h = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.family}-{h}" + (f"-{self.variant}" if self.variant else "")


# ------------------------------------------------------------------------------------------------ tokenizers
def _train_tokenizer(special: list[str], vocab_size: int, eos: str, pad: str, chat_template: str,
                     bos: str | None = None, extra: dict | None = None):
    """Byte-level BPE trained on the bundled corpus; special tokens get ids 0..len(special)-1 in order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([corpus_text()], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=pad, bos_token=bos,
                                   **(extra or {}))
    fast.chat_template = chat_template
    fast.model_max_length = 32768
    return fast, {s: fast.convert_tokens_to_ids(s) for s in special}


QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN_TEXT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for item in message['content'] %}{%- if 'text' in item %}{{- item['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")

QWEN3_VL_SPECIAL = QWEN_SPECIAL + ["<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
                                   "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
                                   "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
QWEN3_VL_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for item in message['content'] %}"
    "{%- if item['type'] == 'image' or item['type'] == 'image_url' or 'image' in item %}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif item['type'] == 'video' or 'video' in item %}{{- '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in item %}{{- item['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")

# HunyuanOCR's real token strings; ids are small because the vocab is tiny.
HY_BOS, HY_EOS, HY_PAD = "<｜hy_begin▁of▁sentence｜>", "<｜hy_end▁of▁sentence｜>", "<｜hy_▁pad▁｜>"
HY_SYS_END, HY_USER, HY_ASSIST = "<｜hy_place▁holder▁no▁3｜>", "<｜hy_User｜>", "<｜hy_Assistant｜>"
HY_IM_START, HY_IM_END, HY_IM_TOK, HY_IM_NL = ("<｜hy_place▁holder▁no▁100｜>", "<｜hy_place▁holder▁no▁101｜>",
                                              "<｜hy_place▁holder▁no▁102｜>", "<｜hy_place▁holder▁no▁103｜>")
HY_SPECIAL = [HY_BOS, HY_EOS, HY_PAD, HY_SYS_END, HY_USER, HY_ASSIST, HY_IM_START, HY_IM_END, HY_IM_TOK, HY_IM_NL]
# HunyuanOCR's template shape: BOS [system] <no_3>, each user turn ends with <hy_User>, each assistant turn with
# <hy_Assistant>...EOS. The generation prompt is empty: the model answers right after <hy_User>.
HY_TEMPLATE = (
    "{{- '" + HY_BOS + "' }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- if messages[0]['content'] is string %}{{- messages[0]['content'] }}{%- else %}"
    "{%- for item in messages[0]['content'] %}{%- if 'text' in item %}{{- item['text'] }}{%- endif %}{%- endfor %}"
    "{%- endif %}{%- set msgs = messages[1:] %}"
    "{%- else %}{%- set msgs = messages %}{%- endif %}"
    "{{- '" + HY_SYS_END + "' }}"
    "{%- for message in msgs %}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for item in message['content'] %}"
    "{%- if item['type'] == 'image' or item['type'] == 'image_url' or 'image' in item %}"
    "{{- '" + HY_IM_START + HY_IM_TOK + HY_IM_END + "' }}"
    "{%- elif 'text' in item %}{{- item['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{%- if message['role'] == 'user' %}{{- '" + HY_USER + "' }}"
    "{%- else %}{{- '" + HY_EOS + "' }}{%- endif %}"
    "{%- endfor %}")

QA_SPECIAL = QWEN_SPECIAL + ["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
QA_TEMPLATE = (  # Qwen2-Audio-7B-Instruct's template
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or content['type'] == 'audio_url' or 'audio' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


# ------------------------------------------------------------------------------------------------ builders
def _text_cfg(s: TinySpec, vocab: int, **kw) -> dict:
    return dict(vocab_size=vocab, hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
                num_hidden_layers=s.num_layers, num_attention_heads=s.num_heads, num_key_value_heads=s.num_kv_heads,
                head_dim=s.head_dim, max_position_embeddings=s.max_position_embeddings, **kw)


def _build_text(s: TinySpec, out: Path):
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM
    tok, ids = _train_tokenizer(QWEN_SPECIAL, s.vocab_size, "<|im_end|>", "<|endoftext|>", QWEN_TEXT_TEMPLATE)
    cfg = Qwen3Config(**_text_cfg(s, len(tok), rope_theta=1000000.0, tie_word_embeddings=False,
                                  eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]))
    model = Qwen3ForCausalLM(cfg)
    gen = GenerationConfig(eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]], pad_token_id=ids["<|endoftext|>"],
                           do_sample=False)
    return model, tok, None, gen


def _build_qwen3_vl(s: TinySpec, out: Path):
    from transformers import GenerationConfig, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor
    tok, ids = _train_tokenizer(QWEN3_VL_SPECIAL, s.vocab_size, "<|im_end|>", "<|endoftext|>", QWEN3_VL_TEMPLATE)
    half = s.head_dim // 2  # interleaved M-RoPE sections must sum to head_dim/2
    section = [half - 2 * (half // 3), half // 3, half // 3]
    cfg = Qwen3VLConfig(
        text_config=_text_cfg(s, len(tok), rope_parameters={"rope_type": "default", "rope_theta": 5000000.0,
                                                            "mrope_section": section, "mrope_interleaved": True},
                              tie_word_embeddings=False, eos_token_id=ids["<|im_end|>"],
                              pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=s.tower_layers, hidden_size=64, intermediate_size=128, num_heads=2, patch_size=16,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=s.hidden_size,
                           num_position_embeddings=576, deepstack_visual_indexes=list(range(min(2, s.tower_layers)))),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False)
    cfg.eos_token_id, cfg.pad_token_id = ids["<|im_end|>"], ids["<|endoftext|>"]
    model = Qwen3VLForConditionalGeneration(cfg)
    # patch 16 x merge 2 = 32 px per LLM token; at most 256x256 px = 64 image tokens
    pix = dict(patch_size=16, temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    ip = Qwen2VLImageProcessorPil(size={"shortest_edge": 32 * 32 * 4, "longest_edge": 256 * 256}, **pix)
    vp = Qwen3VLVideoProcessor(size={"shortest_edge": 32 * 32 * 4, "longest_edge": 256 * 256 * 4}, **pix)
    proc = Qwen3VLProcessor(image_processor=ip, tokenizer=tok, video_processor=vp, chat_template=QWEN3_VL_TEMPLATE)
    gen = GenerationConfig(eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]], pad_token_id=ids["<|endoftext|>"],
                           do_sample=False)
    return model, tok, proc, gen


def _build_hunyuan_vl(s: TinySpec, out: Path):
    from transformers import GenerationConfig, HunYuanVLConfig, HunYuanVLForConditionalGeneration, HunYuanVLProcessor
    from transformers.models.hunyuan_vl.image_processing_pil_hunyuan_vl import HunYuanVLImageProcessorPil
    tok, ids = _train_tokenizer(
        HY_SPECIAL, s.vocab_size, HY_EOS, HY_PAD, HY_TEMPLATE, bos=HY_BOS,
        extra={"extra_special_tokens": {"image_token": HY_IM_TOK, "image_start_token": HY_IM_START,
                                        "image_end_token": HY_IM_END}})
    quarter = s.head_dim // 8  # HunyuanOCR: xdrope_section [16]*4 at head_dim 128 -> head_dim/8 each
    cfg = HunYuanVLConfig(
        text_config=_text_cfg(
            s, len(tok), rope_parameters={"rope_type": "xdrope", "rope_theta": 10000.0, "alpha": 1000.0,
                                          "beta_fast": 32, "beta_slow": 1, "factor": 1.0, "mscale": 1.0,
                                          "mscale_all_dim": 1.0, "xdrope_section": [quarter] * 4},
            tie_word_embeddings=True, bos_token_id=ids[HY_BOS], eos_token_id=ids[HY_EOS], pad_token_id=ids[HY_PAD],
            eod_token_id=ids[HY_EOS], sep_token_id=ids[HY_SYS_END]),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_attention_heads=2,
                           num_hidden_layers=s.tower_layers, patch_size=16, spatial_merge_size=2, max_image_size=512,
                           min_image_size=64, out_hidden_size=s.hidden_size, text_hidden_size=s.hidden_size,
                           img_max_token_num=1024, max_vit_seq_len=1024),
        image_token_id=ids[HY_IM_TOK], im_start_id=ids[HY_IM_START], im_end_id=ids[HY_IM_END],
        im_newline_id=ids[HY_IM_NL], tie_word_embeddings=True)
    cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = ids[HY_BOS], ids[HY_EOS], ids[HY_PAD]
    model = HunYuanVLForConditionalGeneration(cfg)
    # patch 16 x merge 2 = 32 px grid; at most 256x256 px -> 8x8 merged grid -> 8*(8+1)+2 = 74 tokens
    ip = HunYuanVLImageProcessorPil(patch_size=16, temporal_patch_size=1, merge_size=2,
                                    size={"shortest_edge": 64 * 64, "longest_edge": 256 * 256})
    proc = HunYuanVLProcessor(image_processor=ip, tokenizer=tok, chat_template=HY_TEMPLATE)
    gen = GenerationConfig(bos_token_id=ids[HY_BOS], eos_token_id=[ids[HY_EOS]], pad_token_id=ids[HY_PAD],
                           do_sample=False)
    return model, tok, proc, gen


def _build_qwen2_audio(s: TinySpec, out: Path):
    from transformers import (GenerationConfig, Qwen2AudioConfig, Qwen2AudioForConditionalGeneration,
                              Qwen2AudioProcessor, WhisperFeatureExtractor)
    tok, ids = _train_tokenizer(QA_SPECIAL, s.vocab_size, "<|im_end|>", "<|endoftext|>", QA_TEMPLATE)
    text = _text_cfg(s, len(tok), model_type="qwen2", rope_theta=10000.0, tie_word_embeddings=False,
                     eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                     bos_token_id=ids["<|endoftext|>"])
    text.pop("head_dim")  # Qwen2 derives it from hidden/heads
    if s.hidden_size // s.num_heads != s.head_dim:
        raise ValueError("qwen2_audio tiny targets need hidden_size == num_heads * head_dim")
    cfg = Qwen2AudioConfig(
        audio_config=dict(num_mel_bins=128, encoder_layers=s.tower_layers, encoder_attention_heads=2,
                          encoder_ffn_dim=128, d_model=64,
                          max_source_positions=50 * s.audio_seconds),     # 100 mel frames/s, conv stride 2
        text_config=text, audio_token_index=ids["<|AUDIO|>"])
    cfg.eos_token_id, cfg.pad_token_id = ids["<|im_end|>"], ids["<|endoftext|>"]
    model = Qwen2AudioForConditionalGeneration(cfg)
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=s.audio_seconds,
                                 n_fft=400, padding_value=0.0, return_attention_mask=True)
    proc = Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tok, chat_template=QA_TEMPLATE)
    gen = GenerationConfig(eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]], pad_token_id=ids["<|endoftext|>"],
                           do_sample=False)
    return model, tok, proc, gen


# ------------------------------------------------------------------------------------------------ a second text target
# Built differently from `_build_text` on every axis a trainer could lean on: Llama architecture (LlamaForCausalLM,
# rope_theta 5e5), a SentencePiece-style tokenizer (Metaspace BPE with <unk>, not byte-level) of another size, Llama-3 special tokens and
# a string-only header template, and its own corpus (recipes, travel diaries, weather reports, shop notices).
LLAMA_BOS, LLAMA_EOT, LLAMA_EOS = "<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>"
LLAMA_SPECIAL = [LLAMA_BOS, LLAMA_EOS, "<|start_header_id|>", "<|end_header_id|>", LLAMA_EOT,
                 "<|finetune_right_pad_id|>", "<unk>"]
LLAMA_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")
LLAMA_VOCAB = 1536

_L_FOODS = ["lentil soup", "barley bread", "plum tart", "onion pie", "rice pudding", "bean stew", "pepper salad",
            "apple cake", "leek gratin", "corn fritters", "fish broth", "mushroom risotto", "carrot jam",
            "potato dumplings", "walnut biscuits", "tomato sauce"]
_L_ING = ["two onions", "a cup of flour", "three eggs", "a spoon of butter", "a pinch of salt", "half a lemon",
          "four carrots", "a glass of milk", "some fresh thyme", "a handful of walnuts", "two ripe plums",
          "a clove of garlic", "a bowl of rice", "six small potatoes", "a spoon of honey", "a little olive oil"]
_L_VERB = ["chop", "stir", "bake", "simmer", "whisk", "fold", "roast", "slice", "mash", "season"]
_L_TIME = ["ten minutes", "a quarter of an hour", "twenty minutes", "half an hour", "an hour", "five minutes"]
_L_TOWN = ["Harbourside", "Millbrook", "Stonegate", "Ashford", "Kelby", "Wrenmoor", "Oakhurst", "Lindale",
           "Pebble Bay", "Fernhill", "Corrin", "Thistlewick"]
_L_PLACE = ["the old market", "the river path", "a small museum", "the harbour wall", "the hill fort",
            "a quiet chapel", "the station cafe", "the botanical garden", "the lighthouse", "the stone bridge"]
_L_FEEL = ["tired but happy", "a little lost", "very hungry", "cheerful", "soaked to the skin", "calm",
           "curious about everything", "sleepy"]
_L_SKY = ["clear", "cloudy", "foggy", "windy", "rainy", "stormy", "bright", "grey"]
_L_WIND = ["north", "south", "east", "west", "north west", "south east"]
_L_DAY = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_L_ITEM = ["umbrellas", "garden chairs", "wool socks", "kitchen knives", "paint brushes", "bicycle lamps",
           "rain coats", "tea cups", "notebooks", "candles"]


def _llama_sentences(rng) -> list[str]:
    """One short document (3-6 sentences) in one of four styles."""
    c = rng.choice
    kind = rng.randrange(4)
    if kind == 0:
        food = c(_L_FOODS)
        out = [f"Recipe for {food}: you need {c(_L_ING)}, {c(_L_ING)} and {c(_L_ING)}."]
        for _ in range(rng.randint(2, 4)):
            out.append(f"{c(_L_VERB).capitalize()} {c(_L_ING)} and {c(_L_VERB)} it for {c(_L_TIME)}.")
        out.append(f"Serve the {food} warm with {c(_L_ING)}.")
    elif kind == 1:
        town = c(_L_TOWN)
        out = [f"Travel diary, {c(_L_DAY)}: we arrived in {town} in the {c(['morning', 'afternoon', 'evening'])}."]
        for _ in range(rng.randint(2, 4)):
            out.append(f"We walked to {c(_L_PLACE)} and I felt {c(_L_FEEL)}.")
        out.append(f"Tomorrow we leave {town} for {c(_L_TOWN)}.")
    elif kind == 2:
        town = c(_L_TOWN)
        t = rng.randint(2, 28)
        out = [f"Weather report for {town} on {c(_L_DAY)}: the sky will be {c(_L_SKY)}.",
               f"The wind blows from the {c(_L_WIND)} and the temperature stays near {t} degrees."]
        if rng.random() < 0.6:
            out.append(f"By the evening it turns {c(_L_SKY)} with {t - rng.randint(1, 5)} degrees.")
        out.append(f"Take {c(['a coat', 'an umbrella', 'a hat', 'sun cream', 'warm gloves'])} if you go out.")
    else:
        out = [f"Notice from the shop in {c(_L_TOWN)}: new {c(_L_ITEM)} arrive on {c(_L_DAY)}."]
        for _ in range(rng.randint(1, 3)):
            out.append(f"We also sell {c(_L_ITEM)} and {c(_L_ITEM)} at a fair price.")
        out.append(f"The shop is open from {rng.randint(7, 10)} until {rng.randint(4, 8)} every day but {c(_L_DAY)}.")
    return out


def llama_corpus_docs(n: int = 800, seed: int = 1234) -> list[list[str]]:
    """The second target's corpus as documents (lists of sentences); deterministic."""
    import random
    rng = random.Random(seed)
    return [_llama_sentences(rng) for _ in range(n)]


_LLAMA_ASKS = ["Continue this note: {s}", "Write more like this: {s}", "Please go on: {s}",
               "Add two sentences after this: {s}", "Finish the text: {s}", "Keep writing: {s}"]


def llama_corpus_text() -> str:
    """About the size of the bundled corpus: documents one per line, plus the ask phrases (so prompts tokenize)."""
    rng_docs = llama_corpus_docs()
    lines = [" ".join(d) for d in rng_docs]
    lines += [a.format(s=" ".join(d[:1])) + " " + " ".join(d[1:]) for a, d in zip(_LLAMA_ASKS * 60, rng_docs[::7])]
    return "\n".join(lines) + "\n"


def llama_prompt_set(n: int, seed: int = 0, heldout: bool = False) -> list[dict]:
    """Seed-format prompts in the second target's style (string content). Training prompts start from the first
    sentence of documents drawn with one generator, held-out prompts from freshly generated documents whose first
    sentence occurs in neither the training prompts nor (by construction of the seed) the same draw."""
    import random
    rng = random.Random(seed)
    docs = llama_corpus_docs(n=4 * n + 50, seed=(777 if heldout else 555) + seed)
    train_first = set() if not heldout else {d[0] for d in llama_corpus_docs(n=4 * 240 + 50, seed=555)}
    rows, seen = [], set()
    for d in docs:
        s = d[0] if rng.random() < 0.7 else " ".join(d[:2])
        if s in seen or d[0] in train_first:
            continue
        seen.add(s)
        rows.append({"id": f"p-llama-{'h' if heldout else 't'}-{len(rows):05d}", "conversations": [
            {"role": "user", "content": rng.choice(_LLAMA_ASKS).format(s=s)}, {"role": "assistant", "content": ""}]})
        if len(rows) == n:
            break
    return rows


def _train_sentencepiece_bpe(vocab_size: int):
    """SentencePiece-style BPE (Metaspace word boundaries, an <unk> token, no byte level) trained on the variant's
    corpus, padded to `vocab_size` with Llama-3's reserved special tokens (the corpus supports fewer merges)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=LLAMA_SPECIAL, show_progress=False,
                                  initial_alphabet=list("\n:,.?!'-0123456789"))
    tok.train_from_iterator(llama_corpus_text().splitlines(), trainer)
    n = tok.get_vocab_size()
    if n < vocab_size:
        tok.add_special_tokens([f"<|reserved_special_token_{i}|>" for i in range(vocab_size - n)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=LLAMA_BOS, eos_token=LLAMA_EOT,
                                   pad_token="<|finetune_right_pad_id|>", unk_token="<unk>")
    fast.chat_template = LLAMA_TEMPLATE
    fast.model_max_length = 32768
    return fast, {t: fast.convert_tokens_to_ids(t) for t in LLAMA_SPECIAL}


def _build_text_llama(s: TinySpec, out: Path):
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM
    tok, ids = _train_sentencepiece_bpe(LLAMA_VOCAB)
    cfg = LlamaConfig(**_text_cfg(s, len(tok), rope_theta=500000.0, tie_word_embeddings=False, rms_norm_eps=1e-5,
                                  bos_token_id=ids[LLAMA_BOS], eos_token_id=[ids[LLAMA_EOS], ids[LLAMA_EOT]],
                                  pad_token_id=ids["<|finetune_right_pad_id|>"]))
    model = LlamaForCausalLM(cfg)
    gen = GenerationConfig(bos_token_id=ids[LLAMA_BOS], eos_token_id=[ids[LLAMA_EOS], ids[LLAMA_EOT]],
                           pad_token_id=ids["<|finetune_right_pad_id|>"], do_sample=False)
    return model, tok, None, gen


_VARIANTS = {("text", "llama"): (_build_text_llama, llama_corpus_text)}

_BUILDERS = {"text": _build_text, "qwen3_vl": _build_qwen3_vl, "hunyuan_vl": _build_hunyuan_vl,
             "qwen2_audio": _build_qwen2_audio}


def _fix_qwen2_audio_keys(out: Path) -> None:
    """transformers 5.19's save_pretrained writes `language_model.model.model.*` for Qwen2-Audio (it reverses two
    renamings); the Hub layout, which vLLM loads and transformers reads back identically, is `language_model.model.*`."""
    from safetensors.torch import load_file, save_file
    p = out / "model.safetensors"
    sd = load_file(str(p))
    if any(k.startswith("language_model.model.model.") for k in sd):
        sd = {k.replace("language_model.model.model.", "language_model.model."): v for k, v in sd.items()}
        save_file(sd, str(p), metadata={"format": "pt"})


def build_tiny_target(family: str, out_dir: str | os.PathLike, overwrite: bool = False, **overrides) -> Path:
    """Build a tiny target of `family` into `out_dir`: built in a temp folder next to it, then moved in file by file.
    `out_dir` must be missing, empty or a tiny target we wrote (outputs.claim_output_dir). Returns the path."""
    import torch
    from ..outputs import claim_output_dir, record_written
    if family not in _BUILDERS:
        raise ValueError(f"unknown tiny family {family!r}; choose from {', '.join(_BUILDERS)}")
    spec = TinySpec(family=family, **overrides)
    builder, corpus = _BUILDERS[family], None
    if spec.variant:
        if (family, spec.variant) not in _VARIANTS:
            raise ValueError(f"unknown tiny variant {spec.variant!r} for {family!r}; known: {sorted(_VARIANTS)}")
        builder, corpus = _VARIANTS[(family, spec.variant)]
    out = claim_output_dir(out_dir, "tiny-target", overwrite=overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        torch.manual_seed(spec.seed)
        model, tok, proc, gen = builder(spec, tmp)
        model = model.to(torch.float32).eval()
        if spec.pretrain_steps:
            from .pretrain import pretrain_text_stack
            if corpus is None:
                pretrain_text_stack(model, tok, spec)
            else:   # the same pretraining run, on the variant's own corpus
                from unittest import mock
                with mock.patch("eagle3_plugin.fixtures.corpus_text", corpus):
                    pretrain_text_stack(model, tok, spec)
        model.to(torch.bfloat16).save_pretrained(tmp)
        if family == "qwen2_audio":
            _fix_qwen2_audio_keys(tmp)
        gen.save_pretrained(tmp)
        if proc is not None:
            proc.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "tiny_spec.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")
        names = sorted(p.name for p in tmp.iterdir())
        record_written(out, *names)
        for name in names:          # tiny_spec.json last: its presence means the target is complete
            if name != "tiny_spec.json":
                os.replace(tmp / name, out / name)
        os.replace(tmp / "tiny_spec.json", out / "tiny_spec.json")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def cached_tiny_target(family: str, cache_dir: str | os.PathLike | None = None, **overrides) -> Path:
    """Build once per spec into a cache folder (default $EAGLE3_CACHE or ~/.cache/eagle3-plugin/tiny)."""
    spec = TinySpec(family=family, **overrides)
    root = Path(cache_dir or os.environ.get("EAGLE3_CACHE") or Path.home() / ".cache" / "eagle3-plugin") / "tiny"
    out = root / spec.key()
    if not (out / "tiny_spec.json").exists():
        build_tiny_target(family, out, **overrides)
    return out
