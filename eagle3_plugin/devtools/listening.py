"""A tiny audio target (Qwen2-Audio) that really listens: the answer is decided by the sound.

The task: espeak-ng spells a text out, one letter or digit per fixed time slot of 0.48 s ("k i t e" is heard as
"kay", "eye", "tee", "ee", a slot each), and the answer is the text ("kite"). Voice, accent, speed, pitch, loudness
and a 0-40 ms start jitter vary per utterance. One character per slot is to listening what one character per image
column is to the readers (eagle3_plugin/devtools/reading.py): it makes the task learnable by a tiny model on CPU in
minutes for words it never heard (with free timing, the tiny model had learned nothing after 250 steps). Texts,
evaluation lists and held-out construction are the readers': the target trains on random strings, its drafts on those
and on words of the shipped list, never an evaluation text, and evaluation utterances use their own seed.
Needs espeak-ng and sox (apt-get install espeak-ng sox).
"""
from __future__ import annotations

import io
import random
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np

from .reading import Task

SAMPLE_RATE = 16_000
AUDIO_SECONDS = 5            # the listener's feature-extractor window: every clip lasts 3.4 s
SLOT_S = 0.48                # one character: 12 audio tokens (40 ms each after the encoder's two 2x reductions)
MAX_CHARS = 7                # texts are 3-7 characters (reading.training_text, reading.eval_texts)
JITTER = int(0.04 * SAMPLE_RATE)   # the clip's start varies by up to 40 ms (one audio token)
QUESTIONS = ("What is spelled in the audio?", "Transcribe the audio.", "Write down what you hear.")
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-gb-x-gbclan")
VARIANTS = ("", "+m3", "+f2", "+f4")
SPEEDS = (150, 185)          # words per minute
PITCHES = (35, 60)


def require_tools() -> None:
    missing = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
    if missing:
        raise RuntimeError(f"the listening task needs {' and '.join(missing)} on PATH: apt-get install espeak-ng sox")


@lru_cache(maxsize=None)
def _spoken(char: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """One character as espeak-ng says it, at 16 kHz, silence trimmed, cut to one slot."""
    import soundfile as sf
    require_tools()
    wav22k = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", char],
                            capture_output=True, check=True).stdout
    wav16k = subprocess.run(["sox", "-t", "wav", "-", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", "-t", "wav", "-"],
                            input=wav22k, capture_output=True, check=True).stdout
    wav, _ = sf.read(io.BytesIO(wav16k), dtype="float32")
    loud = np.flatnonzero(np.abs(wav) > 0.02 * np.abs(wav).max())
    return wav[loud[0]:loud[-1] + 1][:int(SLOT_S * SAMPLE_RATE)]


def speak(text: str, rng: random.Random) -> np.ndarray:
    """The text spelled out by espeak-ng, one character per slot, in a clip of fixed length (3.4 s): float32 mono at
    16 kHz. A fixed length gives every clip as many audio tokens, so the k-th character is always as far back from
    the answer (1-D positions), as a fixed image size does for the readers."""
    if len(text) > MAX_CHARS:
        raise ValueError(f"{text!r}: the listening task spells at most {MAX_CHARS} characters")
    voice = rng.choice(VOICES) + rng.choice(VARIANTS)
    speed, pitch, gain = rng.choice(SPEEDS), rng.choice(PITCHES), rng.uniform(0.5, 1.0)
    lead = rng.randint(0, JITTER)
    slot = int(SLOT_S * SAMPLE_RATE)
    out = np.zeros(JITTER + slot * MAX_CHARS, dtype=np.float32)
    for i, char in enumerate(text):
        clip = _spoken(char, voice, speed, pitch)
        out[lead + i * slot:lead + i * slot + len(clip)] = clip
    return out * (gain / max(1e-6, float(np.abs(out).max())))


def save_wav(wav, path: Path) -> None:
    import soundfile as sf
    sf.write(str(path), wav, SAMPLE_RATE, subtype="PCM_16")


LISTENING = Task("listening", "audio", speak, save_wav, ".wav", QUESTIONS, model_class="")
