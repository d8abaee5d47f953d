"""Regenerate the media fixtures committed under eagle3_plugin/fixtures/ (maintainers only; tests never run this).

    python scripts/make_fixtures.py        # needs pillow, espeak-ng and sox (apt-get install espeak-ng sox)
    python scripts/make_fixtures.py words  # only words.txt (needs apt-get install wamerican)
    python scripts/make_fixtures.py tiny   # only the pipeline's pretrained tiny targets (tests/fixtures/tiny)

Writes: corpus.txt (tokenizer / pretraining text), images/*.png (PIL-rendered documents and scenes),
audio/*.wav (espeak-ng speech, 16 kHz mono), conversations.jsonl (seed-format chats: text, image, audio),
words.txt (English words the reading drafts train on: SCOWL via Debian's wamerican, notice in words.NOTICE).
Deterministic: a fixed RNG seed, and the same tools give the same files.
"""
import json
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parents[1] / "eagle3_plugin" / "fixtures"
TINY_ROOT = Path(__file__).resolve().parents[1] / "tests" / "fixtures"      # cached_tiny_target adds tiny/<key>
rng = random.Random(1234)

SUBJECTS = ["the red fox", "a small robot", "the old sailor", "my neighbour", "the young student", "a tired cat",
            "the museum guide", "our teacher", "the baker", "a curious child", "the pilot", "the gardener"]
VERBS = ["reads", "writes", "draws", "finds", "carries", "explains", "paints", "counts", "opens", "describes"]
OBJECTS = ["a long letter", "the blue box", "three green apples", "a map of the city", "the weather report",
           "an old photograph", "the train schedule", "a short poem", "the price list", "a secret message"]
PLACES = ["in the kitchen", "at the station", "near the river", "in the library", "on the bridge",
          "at the market", "in the garden", "under the old tree"]
TIMES = ["every morning", "on Sunday", "before dinner", "after school", "late at night", "in the spring"]
TOPICS = {
    "speculative decoding": "A small draft model proposes several tokens and the large target model checks them "
                            "in one pass, so the answer is the same but it arrives sooner.",
    "the water cycle": "Water evaporates from the sea, forms clouds, falls as rain and flows back to the sea.",
    "photosynthesis": "Plants use sunlight, water and carbon dioxide to make sugar and release oxygen.",
    "a binary search": "A binary search halves a sorted list at every step until it finds the value.",
    "the moon": "The moon orbits the earth about once a month and reflects the light of the sun.",
    "a rainbow": "A rainbow appears when sunlight is split into colours by drops of rain.",
    "tea": "To make tea, boil water, pour it over the leaves and wait three minutes.",
    "trains": "Trains run on rails, carry many people at once and stop at stations along the line.",
    "bees": "Bees collect nectar from flowers and turn it into honey inside the hive.",
    "recycling": "Recycling sorts paper, glass and metal so they can be made into new things.",
}


def sentence() -> str:
    s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)} {rng.choice(TIMES)}."
    return s[0].upper() + s[1:]


def make_corpus() -> str:
    paras = []
    for topic, fact in TOPICS.items():
        paras.append(f"Question: What is {topic}? Answer: {fact}")
    for _ in range(900):
        paras.append(" ".join(sentence() for _ in range(rng.randint(2, 5))))
    for i in range(200):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        paras.append(f"{a} plus {b} is {a + b}. {a} times {b} is {a * b}.")
    return "\n".join(paras) + "\n"


def make_images() -> list[dict]:
    d = OUT / "images"
    d.mkdir(parents=True, exist_ok=True)
    items = []
    # OCR-like documents
    docs = {
        "receipt.png": ["CORNER BAKERY", "2 bread      4.20", "1 coffee     2.50", "TOTAL        6.70"],
        "sign.png": ["PLATFORM 3", "NEXT TRAIN 10:45", "TO HARBOUR CITY"],
        "invoice.png": ["INVOICE #42", "Item: blue box", "Qty: 3", "Total: 17.50 EUR"],
        "note.png": ["Meeting at noon", "Bring the map", "Room 214"],
    }
    for name, lines in docs.items():
        img = Image.new("RGB", (256, 160), (250, 250, 245))
        dr = ImageDraw.Draw(img)
        dr.rectangle([6, 6, 249, 153], outline=(30, 30, 30), width=2)
        for i, line in enumerate(lines):
            dr.text((16, 16 + 32 * i), line, fill=(10, 10, 10))
        img.save(d / name, optimize=True)
        items.append({"file": f"images/{name}", "kind": "document", "text": " / ".join(lines)})
    # natural-ish scenes
    scene = Image.new("RGB", (256, 192), (135, 190, 235))
    dr = ImageDraw.Draw(scene)
    dr.rectangle([0, 120, 256, 192], fill=(70, 150, 60))
    dr.ellipse([180, 20, 230, 70], fill=(250, 210, 40))
    dr.polygon([(40, 120), (90, 50), (140, 120)], fill=(120, 110, 100))
    scene.save(d / "landscape.png", optimize=True)
    items.append({"file": "images/landscape.png", "kind": "scene", "text": "a green field, a grey mountain and a "
                                                                           "yellow sun in a blue sky"})
    shapes = Image.new("RGB", (224, 224), (255, 255, 255))
    dr = ImageDraw.Draw(shapes)
    dr.ellipse([20, 20, 100, 100], fill=(220, 40, 40))
    dr.rectangle([120, 30, 200, 110], fill=(40, 80, 220))
    dr.polygon([(60, 200), (110, 120), (160, 200)], fill=(40, 170, 70))
    shapes.save(d / "shapes.png", optimize=True)
    items.append({"file": "images/shapes.png", "kind": "scene", "text": "a red circle, a blue square and a green "
                                                                        "triangle"})
    return items


def make_audio() -> list[dict]:
    d = OUT / "audio"
    d.mkdir(parents=True, exist_ok=True)
    phrases = {
        "hello.wav": "hello world, this is a speculative decoding test",
        "weather.wav": "the weather today is sunny with a light wind from the west",
        "numbers.wav": "one two three four five six seven eight nine ten",
        "train.wav": "the next train to harbour city leaves from platform three",
    }
    items = []
    for name, text in phrases.items():
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "raw.wav"
            subprocess.run(["espeak-ng", "-s", "150", "-w", str(raw), text], check=True)
            subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(d / name)], check=True)
        items.append({"file": f"audio/{name}", "text": text})
    return items


def make_conversations(images, audio) -> list[dict]:
    rows = []
    topics = list(TOPICS.items())
    asks = ["What is {t}?", "Explain {t} in one or two sentences.", "Tell me briefly about {t}.",
            "Can you describe {t} to a child?"]
    for i, (topic, fact) in enumerate(topics * 2):
        q = asks[i % len(asks)].format(t=topic)
        rows.append({"conversations": [{"role": "user", "content": [{"type": "text", "text": q}]},
                                       {"role": "assistant", "content": [{"type": "text", "text": fact}]}]})
    for i in range(4):  # plain-string content and multi-turn are accepted too
        s1, s2 = sentence(), sentence()
        rows.append({"conversations": [{"role": "user", "content": f"Repeat this sentence: {s1}"},
                                       {"role": "assistant", "content": s1},
                                       {"role": "user", "content": f"And now this one: {s2}"},
                                       {"role": "assistant", "content": s2}]})
    img_asks = ["What is written in the image?", "Describe the image.", "Read the text in this picture.",
                "What do you see?"]
    for i, im in enumerate(images * 2):
        q = img_asks[i % len(img_asks)]
        rows.append({"conversations": [
            {"role": "user", "content": [{"type": "image", "image": im["file"]}, {"type": "text", "text": q}]},
            {"role": "assistant", "content": [{"type": "text", "text": f"The image shows {im['text']}."}]}]})
    aud_asks = ["Detect the language and recognize the speech: <|en|>", "What is said in the audio?",
                "Transcribe the audio."]
    for i, au in enumerate(audio * 3):
        q = aud_asks[i % len(aud_asks)]
        rows.append({"conversations": [
            {"role": "user", "content": [{"type": "audio", "audio": au["file"]}, {"type": "text", "text": q}]},
            {"role": "assistant", "content": [{"type": "text", "text": au["text"]}]}]})
    for i, r in enumerate(rows):
        r["id"] = f"fx-{i:03d}"
    return [{"id": r["id"], "conversations": r["conversations"]} for r in rows]


WORD_LIST = Path("/usr/share/dict/american-english")
WORDS = 6000


def make_words() -> None:
    """A seeded sample of the 3-7 letter lower-case words of SCOWL (wamerican), with its copyright notice. Held-out
    reading words are left out where they are used (devtools/reading.py), not here."""
    words = sorted({w for w in WORD_LIST.read_text().split() if w.isascii() and w.isalpha() and w.islower()
                    and 3 <= len(w) <= 7})
    pick = sorted(random.Random(7).sample(words, WORDS))
    (OUT / "words.txt").write_text("\n".join(pick) + "\n")
    notice = Path("/usr/share/doc/wamerican/copyright").read_text()
    (OUT / "words.NOTICE").write_text("words.txt: a sample of SCOWL's word lists (Debian package wamerican).\n\n"
                                      + notice)
    print(f"{len(pick)} of {len(words)} words -> {OUT / 'words.txt'}")


def main():
    make_words()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "corpus.txt").write_text(make_corpus())
    images = make_images()
    audio = make_audio() if shutil.which("espeak-ng") and shutil.which("sox") else []
    rows = make_conversations(images, audio)
    with open(OUT / "conversations.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{len(rows)} conversations, {len(images)} images, {len(audio)} audio clips -> {OUT}")


def make_tiny() -> None:
    """The pipeline's pretrained tiny targets, one per family (devtools.pipeline), into tests/fixtures/tiny/<spec key>:
    scripts/test.sh seeds $EAGLE3_CACHE/tiny with them, so CI never pretrains them."""
    from eagle3_plugin.devtools.pipeline import PipelineConfig
    from eagle3_plugin.devtools.tiny import cached_tiny_target
    from eagle3_plugin.families import FAMILIES
    for family in FAMILIES:
        steps = PipelineConfig.for_family(family, workdir="").pretrain_steps
        print(cached_tiny_target(family, cache_dir=TINY_ROOT, pretrain_steps=steps))


if __name__ == "__main__":
    import sys
    {"words": make_words, "tiny": make_tiny}.get(" ".join(sys.argv[1:]), main)()
