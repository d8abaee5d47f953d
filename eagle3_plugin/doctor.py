"""`eagle3-train doctor` and `eagle3-train check`: what is installed, what the plugin registers, and whether a draft
fits its target. Reports are plain text a user can paste into an issue."""
from __future__ import annotations

import importlib
import importlib.metadata as md


def _version(module: str) -> str:
    try:
        return getattr(importlib.import_module(module), "__version__", "?")
    except Exception as e:  # noqa: BLE001
        return f"not importable ({type(e).__name__}: {str(e).splitlines()[0][:120]})"


def entry_points_found() -> dict[str, list[str]]:
    out = {}
    for group in ("vllm.general_plugins", "sglang.srt.plugins"):
        out[group] = [f"{ep.name} = {ep.value}" for ep in md.entry_points(group=group)]
    return out


def run(engines: list[str] | None = None) -> int:
    engines = engines or ["vllm", "sglang"]
    import eagle3_plugin
    print(f"eagle3-plugin {eagle3_plugin.__version__}")
    for mod in ("torch", "transformers"):
        print(f"  {mod:<13} {_version(mod)}")
    for group, eps in entry_points_found().items():
        print(f"  entry points [{group}]: {', '.join(eps) or 'NONE (is the package installed?)'}")
    status = 0
    from .compat import untested_note
    for engine in engines:
        version = _version(engine)
        print(f"\n{engine}: {version}")
        note = untested_note(engine, version) if not version.startswith("not importable") else None
        if note:
            print(f"  warning    {note}")
        try:
            adapter = importlib.import_module(f"eagle3_plugin.{engine}")
            # SGLang items attach when SGLang imports the modules they patch: full_report() imports them all
            report = adapter.full_report() if hasattr(adapter, "full_report") else adapter.register()
        except Exception as e:  # noqa: BLE001
            print(f"  registration raised {type(e).__name__}: {e}")
            status = 1
            report = ()
        for item in report:
            print(f"  {item.status:<10} {item.name}" + (f"  ({item.reason})" if item.reason else ""))
        for line in fallback_lines(engine):
            print(f"  {line}")
    return status


def fallback_lines(engine: str) -> list[str]:
    """The plugin's counted fallbacks inside this engine (eagle3_plugin/fallbacks.py): in this process and in the
    engine processes that recorded them."""
    from . import fallbacks
    kinds = {"sglang": (fallbacks.SGLANG_DRAFT_INPUTS,)}.get(engine, ())
    return [line for kind in kinds for line in fallbacks.report_lines(kind)]


def check_draft(draft: str, target: str | None) -> int:
    """Print validate()'s findings and a verdict; 0 = loadable, 1 = errors, 2 = the target cannot be read."""
    from .checkpoint import read_folder_config, validate
    target_cfg = None
    if target:
        try:
            target_cfg = read_folder_config(target, "target")
        except ValueError as e:
            print(f"error: {e}")
            return 2
    findings = validate(draft, target_cfg)
    for f in findings:
        print(f)
    errors = [f for f in findings if f.level == "error"]
    print(f"{draft}: {'FAILED' if errors else 'OK'} ({len(errors)} errors, {len(findings) - len(errors)} warnings)")
    return 1 if errors else 0


def check_rendering(target: str, data: str, samples: int, chat_template: str | None,
                    chat_template_kwargs: str | None) -> int:
    """The trainer's prompts vs vLLM's chat rendering for the first `samples` conversations of `data`."""
    import json as _json
    from .families import family_for_target
    from .models import model_config, resolve_model
    from .trainer.fidelity import check_data, report_lines, vllm_available
    if not vllm_available():
        print("error: the rendering check runs vLLM's own chat code: install vllm")
        return 2
    path = resolve_model(target)
    kwargs = _json.loads(chat_template_kwargs) if chat_template_kwargs else None
    results = check_data(path, data, family_for_target(model_config(path)), samples, chat_template, kwargs)
    for line in report_lines(results):
        print(line)
    bad = sum(1 for r in results if r.difference)
    print(f"{data}: {'FAILED' if bad else 'OK'} ({bad} of {len(results)} prompts differ from vLLM's)")
    return 1 if bad else 0
