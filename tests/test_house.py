"""The house rules that keep "one family, one place" true: every family in the table has its one module per engine,
those modules export what the adapters look up, and no family-specific name appears in product code outside the
table, the family's engine modules and its tiny-target spec (comments and docstrings may explain; code may not)."""
from __future__ import annotations

import importlib
import io
import re
import tokenize
from pathlib import Path

import pytest

from eagle3_plugin.families import FAMILIES

REPO = Path(__file__).resolve().parents[1]
PRODUCT = [REPO / "eagle3_plugin", REPO / "trainer", REPO / "entry_points"]
SPECIFIC = [f for f in FAMILIES.values() if f.has_engine_modules]


def engine_paths(family, engine: str) -> list[Path]:
    base = REPO / "eagle3_plugin" / engine
    return [p for p in (base / f"{family.name}.py", base / family.name) if p.exists()]


def family_patterns(family) -> re.Pattern:
    """The family's name, its HF and draft architecture names, and their compact spellings (Qwen3VL, qwen2audio)."""
    words = {family.name, family.name.replace("_", ""), family.draft_architecture, *family.hf_architectures}
    words |= {a.replace("ForConditionalGeneration", "") for a in family.hf_architectures}
    return re.compile("|".join(sorted(map(re.escape, words), key=len, reverse=True)), re.IGNORECASE)


def code_tokens(path: Path):
    """(line, text) of every NAME and non-docstring STRING token: what the program does, not what it says."""
    src = path.read_text()
    prev = None
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.STRING and prev in (None, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                                                   tokenize.NL):
            prev = tok.type          # a docstring (a string statement)
            continue
        if tok.type in (tokenize.NAME, tokenize.STRING):
            yield tok.start[0], tok.string
        if tok.type not in (tokenize.COMMENT, tokenize.NL):
            prev = tok.type


@pytest.mark.parametrize("family", SPECIFIC, ids=lambda f: f.name)
def test_every_family_has_its_engine_modules(family):
    for engine in ("vllm", "sglang"):
        assert engine_paths(family, engine), f"{family.name} has no eagle3_plugin/{engine}/{family.name}.py"
    vllm_mod = importlib.import_module(f"eagle3_plugin.vllm.{family.name}")
    assert vllm_mod.DRAFT.__name__ == family.draft_architecture and callable(vllm_mod.register)
    src = "\n".join(p.read_text() for p in engine_paths(family, "sglang") if p.is_file()) + "".join(
        q.read_text() for p in engine_paths(family, "sglang") if p.is_dir() for q in p.glob("*.py"))
    assert "ITEMS = " in src, f"the SGLang module of {family.name} declares no ITEMS"


def test_no_family_specific_name_outside_its_place():
    allowed = {REPO / "eagle3_plugin" / "families.py", REPO / "eagle3_plugin" / "devtools" / "tiny.py"}
    offenders = []
    for root in PRODUCT:
        for path in root.rglob("*.py"):
            if path in allowed:
                continue
            for family in SPECIFIC:
                own = engine_paths(family, "vllm") + engine_paths(family, "sglang")
                if any(path == p or p in path.parents for p in own):
                    continue
                pattern = family_patterns(family)
                offenders += [f"{path.relative_to(REPO)}:{line}: {text[:80]}" for line, text in code_tokens(path)
                              if pattern.search(text)]
    assert not offenders, "family-specific names outside the family's place:\n" + "\n".join(offenders)


def test_the_check_can_fail(tmp_path):
    """A planted family name in product-like code is found (so the house test is not vacuous)."""
    planted = tmp_path / "x.py"
    planted.write_text('"""Qwen3-VL is fine in a docstring."""\nARCH = "Qwen3VLForConditionalGeneration"  # ok\n')
    hits = [t for _, t in code_tokens(planted) if family_patterns(FAMILIES["qwen3_vl"]).search(t)]
    assert hits == ['"Qwen3VLForConditionalGeneration"']
