"""eagle3-train under bad input: output folders that must not be written, a diverging learning rate, kills at
every disk event of a save, a re-run of a different run, bad recipe files, and inputs that must fail as one line
(no traceback). Every test asserts the exact behaviour: messages, the files left behind, and the weights."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from eagle3_plugin import fixtures
from eagle3_plugin.devtools.tiny import cached_tiny_target
from eagle3_plugin.entry_points.cli import main
from eagle3_plugin.outputs import MARKER, OutputError
from eagle3_plugin.trainer.config import ConfigError, TrainConfig, file_fingerprint
from eagle3_plugin.trainer.loop import TrainingDiverged
from eagle3_plugin.trainer.state import StateError

# one thread: on a shared 2-core box a tiny run takes ~0.3 s with one thread and ~9 s with two contending for it
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
# the start-up check that renders conversations through vLLM's chat code costs ~8 s per process and is not what
# these tests are about (the one-line-error tests below keep it, as a user's run does)
NO_RENDER_CHECK = {"render_check": 0} if "render_check" in TrainConfig.__dataclass_fields__ else {}
FAST = ["--max-steps", "3", "--save-every", "3", "--eval-every", "1000", "--ttt-steps", "2", "--eval-fraction", "0",
        "--draft-vocab-size", "300", "--no-progress", *(["--render-check", "0"] if NO_RENDER_CHECK else [])]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return os.environ.get("EAGLE3_CACHE") or tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def text_target(cache):
    return cached_tiny_target("text", cache_dir=cache)


def _text_lines() -> list[str]:
    """The fixture conversations without media (a text target trains on exactly these)."""
    keep = []
    for line in fixtures.CONVERSATIONS.read_text().splitlines():
        row = json.loads(line)
        parts = [p for m in row["conversations"] if isinstance(m["content"], list) for p in m["content"]]
        if all(p["type"] == "text" for p in parts):
            keep.append(line)
    assert len(keep) >= 10
    return keep


@pytest.fixture
def data(tmp_path) -> Path:
    p = tmp_path / "data" / "train.jsonl"
    p.parent.mkdir()
    p.write_text("\n".join(_text_lines()) + "\n")
    return p


def _train(target, data, out, *extra) -> None:
    main(["train", "--target", str(target), "--data", str(data), "--output", str(out), *FAST, *map(str, extra)])


def _cli(*args, env=ENV) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eagle3_plugin.entry_points.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=env)


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    """The error a failed command printed: exit status 1, no traceback and no warning's source line, and the
    message is the last line of stderr (the lines above are third-party chatter such as progress bars)."""
    assert r.returncode == 1, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert not re.search(r'^\s+(File "|raise |\^)', r.stderr, re.M), r.stderr[-3000:]
    lines = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-1]


def _tree(d: Path) -> dict[str, str]:
    """Every file under d with its sha256 (a folder's exact content)."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def _states(out: Path) -> list[str]:
    root = out / "train_state"
    return sorted(p.name for p in root.iterdir() if p.name.startswith("step-")) if root.is_dir() else []


def _assert_same_tensors(a: Path, b: Path) -> None:
    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys()
    for k in x:
        assert torch.equal(x[k], y[k]), f"{a.name}: {k} differs"


# ===================================================================================== 1. output folder safety
def test_folder_with_user_notes_is_refused_before_any_work(tmp_path, text_target, data, monkeypatch, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes\n")

    def no_work(*a, **k):
        raise AssertionError("the data was read before the output folder was checked")
    monkeypatch.setattr("eagle3_plugin.trainer.loop.FeatureSource", no_work)
    with pytest.raises(OutputError) as e:
        _train(text_target, data, out)
    assert str(e.value) == (f"{out}: not empty (notes.txt) and not written by eagle3-train, so writing the draft "
                            f"there could clobber those files. Pick an empty or new folder (--overwrite only "
                            f"replaces what eagle3-train wrote, and it wrote nothing here)")
    assert sorted(os.listdir(out)) == ["notes.txt"] and (out / "notes.txt").read_text() == "my notes\n"
    # --overwrite does not make a foreign folder ours
    with pytest.raises(OutputError, match="not written by eagle3-train"):
        _train(text_target, data, out, "--overwrite")
    assert sorted(os.listdir(out)) == ["notes.txt"]
    assert "data:" not in capsys.readouterr().out


@pytest.mark.parametrize("case", ["target", "inside-target", "data-folder", "file"])
def test_output_that_is_an_input_or_a_file_is_refused(tmp_path, text_target, data, case):
    target = tmp_path / "target"                 # a copy: a failing test must not damage the shared cache
    shutil.copytree(text_target, target)
    out = {"target": target, "inside-target": target / "draft", "data-folder": data.parent,
           "file": tmp_path / "draft.txt"}[case]
    if case == "file":
        out.write_text("not a folder\n")
    before = {p: _tree(p) for p in (target, data.parent)}
    with pytest.raises(OutputError) as e:
        _train(target, data, out)
    want = {"target": f"{out}: the draft output folder is {target}, which this command reads",
            "inside-target": f"{out}: the draft output folder is inside {target}, which this command reads",
            "data-folder": f"{out}: the draft output folder contains {data}, which this command reads",
            "file": f"{out}: is a file, not a folder; the draft output is a folder: pick an empty or new folder"}
    assert str(e.value).startswith(want[case]), str(e.value)
    assert {p: _tree(p) for p in (target, data.parent)} == before
    assert not (target / "draft").exists()
    if case == "file":
        assert out.read_text() == "not a folder\n"


def test_overwrite_replaces_our_files_and_keeps_a_foreign_one(tmp_path, text_target, data, capsys):
    out, ref = tmp_path / "draft", tmp_path / "ref"
    _train(text_target, data, out, "--lr", "0.01")
    first = load_file(str(out / "model.safetensors"))
    (out / "notes.txt").write_text("model card draft\n")
    capsys.readouterr()
    _train(text_target, data, out, "--overwrite")             # another lr: only allowed because of --overwrite
    log = capsys.readouterr().out
    assert "resuming from" not in log
    assert (out / "notes.txt").read_text() == "model card draft\n"
    marker = json.loads((out / MARKER).read_text())
    assert sorted(marker["written"]) == ["config.json", "model.safetensors", "train_state"]
    assert sorted(os.listdir(out)) == sorted([MARKER, "config.json", "model.safetensors", "notes.txt", "train_state"])
    # what is there now is exactly a fresh run of the second command, not the first run's files
    _train(text_target, data, ref)
    _assert_same_tensors(out / "model.safetensors", ref / "model.safetensors")
    now = load_file(str(out / "model.safetensors"))
    assert not all(torch.equal(v, now[k]) for k, v in first.items()), "the first run's draft is still there"
    assert _states(out) == ["step-00000003"]
    stored = json.loads((out / "train_state" / "step-00000003" / "train_config.json").read_text())
    assert stored["train_config"]["lr"] == 1e-3


def test_tiny_target_into_a_foreign_folder_is_refused(tmp_path):
    out = tmp_path / "models"
    out.mkdir()
    (out / "notes.txt").write_text("keep me\n")
    with pytest.raises(OutputError) as e:
        main(["tiny", "text", "-o", str(out)])
    assert str(e.value).startswith(f"{out}: not empty (notes.txt) and not written by eagle3-train, so writing the "
                                   f"tiny-target there could clobber those files")
    assert sorted(os.listdir(tmp_path)) == ["models"]           # no half-built temp folder next to it
    assert sorted(os.listdir(out)) == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me\n"


# ===================================================================================== 2. non-finite training
DIVERGED = re.compile(r"^training diverged at step (\d+): loss (nan|inf|-inf) \((.+\.jsonl:\d+|weights .+)\); "
                      r"nothing non-finite was saved\. .*lower --lr \(now 1e\+30\)")


def test_huge_lr_stops_with_one_line_error_and_writes_no_model(tmp_path, text_target, data):
    out = tmp_path / "draft"
    r = _cli("train", "--target", text_target, "--data", data, "-o", out, *FAST, "--max-steps", "6",
             "--save-every", "100", "--eval-every", "100", "--lr", "1e30")
    m = DIVERGED.match(_one_line_error(r))
    assert m, r.stderr[-2000:]
    assert not (out / "model.safetensors").exists() and not (out / "config.json").exists()
    assert _states(out) == []


def test_huge_lr_leaves_the_previous_finite_draft_and_state(tmp_path, text_target, data):
    out = tmp_path / "draft"
    with pytest.raises(TrainingDiverged) as e:      # in-process: the test above checks what the CLI prints
        _train(text_target, data, out, "--max-steps", "6", "--lr", "1e30", "--eval-every", "1", "--save-every", "1")
    m = DIVERGED.match(str(e.value))
    assert m, str(e.value)
    step = int(m.group(1))
    assert step >= 2, "diverged before any draft was written: nothing to check"
    meta = json.loads((out / "config.json").read_text())["eagle3_plugin"]
    assert meta["trained_steps"] == step - 1                   # the last finite draft, not the diverged one
    assert all(torch.isfinite(t.float()).all() for t in load_file(str(out / "model.safetensors")).values())
    assert _states(out) == [f"step-{step - 1:08d}"]
    sd = load_file(str(out / "train_state" / f"step-{step - 1:08d}" / "draft_fp32.safetensors"))
    assert all(torch.isfinite(t).all() for t in sd.values())


# ======================================================================= 3. crash-proof state: fault injection
# Every run below is its own process: a child forked from one server process that has imported the training stack
# (torch, transformers, vLLM's registry for chat rendering: 10-15 s per fresh process on a busy 2-core box) and run
# nothing yet, so each child starts like a fresh `python` and trains from scratch. A kill is os._exit(137) right
# after the n-th disk event of a save: nothing else runs (no finally, no atexit), as with kill -9.
SERVER = r'''
import json, os, signal, sys, time, traceback

def warm(name):
    try:
        __import__(name)
    except Exception:  # noqa: BLE001 - pre-imports only save time; a child imports whatever is missing
        pass

for name in ("eagle3_plugin.trainer.loop", "eagle3_plugin.trainer.target", "eagle3_plugin.trainer.render",
             "torch.utils.tensorboard", "vllm.model_executor.models.registry"):
    warm(name)
import transformers
transformers.Qwen3ForCausalLM
from eagle3_plugin.trainer import state
from eagle3_plugin.trainer.config import TrainConfig
from eagle3_plugin.trainer.loop import train


def cut(fn, kill_at, count):
    """fn, then count the event, print it, and die like kill -9 right after the kill_at-th one."""
    def wrapper(*args):
        fn(*args)
        count[0] += 1
        path = args[-1] if fn.__name__ == "_rename" else args[0]
        print(f"event {count[0]} {fn.__name__} {path.parent.name}/{path.name}", flush=True)
        if count[0] == kill_at:
            os._exit(137)
    return wrapper


def child(req):
    fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = sys.stderr = open(1, "w", buffering=1, closefd=False)
    code = 0
    try:
        if req["kill_at"] >= 0:          # -1: unpatched; 0: count only
            count = [0]
            state._write = cut(state._write, req["kill_at"], count)
            state._rename = cut(state._rename, req["kill_at"], count)
        train(TrainConfig(target=req["target"], data=req["data"], output=req["out"], max_steps=9, save_every=3,
                          eval_every=1000, progress=False, ttt_steps=2, eval_fraction=0, draft_vocab_size=300,
                          **req["extra"]))
    except SystemExit as e:
        print(e)
        code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    os._exit(code)


for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(req)
    deadline = time.time() + req["timeout"]
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            rc = os.waitstatus_to_exitcode(status)
            break
        if time.time() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            rc = "timeout"
            break
        time.sleep(0.02)
    print(json.dumps({"rc": rc}), flush=True)
'''
# the disk events of one save, in order (non-DeepSpeed): every file write, manifest last, then the rename
SAVE_EVENTS = ["_write draft_fp32.safetensors", "_write optimizer.safetensors", "_write optimizer.json",
               "_write rng.safetensors", "_write rng.json", "_write history.json", "_write train_config.json",
               "_write manifest.json", "_rename"]
PER_SAVE = len(SAVE_EVENTS)


class Runs:
    """Start training runs (9 steps, a save every 3) as children of the server; returns (exit status, output)."""

    def __init__(self, tmp: Path, target: Path):
        self.tmp, self.target, self.n = tmp, target, 0
        (tmp / "server.py").write_text(SERVER)
        self.proc = subprocess.Popen([sys.executable, str(tmp / "server.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=ENV)

    def __call__(self, out: Path, kill_at: int) -> tuple[int, str]:
        self.n += 1
        log = self.tmp / f"run-{self.n}.log"
        self.proc.stdin.write(json.dumps({"target": str(self.target), "data": str(fixtures.CONVERSATIONS),
                                          "out": str(out), "kill_at": kill_at, "log": str(log),
                                          "extra": NO_RENDER_CHECK, "timeout": 240}) + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        assert reply, "the run server died"
        rc = json.loads(reply)["rc"]
        assert rc != "timeout", log.read_text()[-3000:]
        return rc, log.read_text()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, text_target):
    r = Runs(tmp_path_factory.mktemp("runs"), text_target)
    yield r
    r.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, runs):
    """An uninterrupted 9-step run (3 saves), counting its disk events."""
    out = tmp_path_factory.mktemp("ref") / "ref"
    rc, log = runs(out, kill_at=0)
    assert rc == 0, log[-3000:]
    events = [ln.split(" ", 2)[2] for ln in log.splitlines() if ln.startswith("event ")]
    want = []
    for step in (3, 6, 9):
        want += [f"_write step-{step:08d}.tmp/{e.split()[1]}" for e in SAVE_EVENTS[:-1]]
        want += [f"_rename train_state/step-{step:08d}"]
    assert events == want, "a save's disk events changed: update SAVE_EVENTS so every one is cut"
    return out


def _assert_same_as_reference(out: Path, ref: Path) -> None:
    assert _states(out) == ["step-00000009"], "a half-written or superseded state was left behind"
    _assert_same_tensors(out / "model.safetensors", ref / "model.safetensors")
    a, b = out / "train_state" / "step-00000009", ref / "train_state" / "step-00000009"
    for name in ("draft_fp32.safetensors", "optimizer.safetensors"):
        _assert_same_tensors(a / name, b / name)
    assert json.loads((a / "history.json").read_text()) == json.loads((b / "history.json").read_text())


@pytest.mark.parametrize("n", range(1, PER_SAVE + 1), ids=[e.split()[-1].strip("_") for e in SAVE_EVENTS])
def test_kill_at_every_event_of_a_save_resumes_exactly(tmp_path, runs, reference, n):
    out = tmp_path / "run"
    kill_at = PER_SAVE + n                      # the n-th event of the second save (step 6)
    rc, log = runs(out, kill_at)
    assert rc == 137, log[-3000:]
    assert log.splitlines()[-1].startswith(f"event {kill_at} {SAVE_EVENTS[n - 1].split()[0]}")
    renamed = n == PER_SAVE
    assert _states(out) == ["step-00000003", "step-00000006" if renamed else "step-00000006.tmp"]
    resume = 6 if renamed else 3
    rc, log = runs(out, kill_at=-1)             # the same command, unpatched
    assert rc == 0, log[-3000:]
    assert f"resuming from {out / 'train_state' / f'step-{resume:08d}'} at step {resume} " in log, log[-3000:]
    assert "warning: skipped" not in log
    _assert_same_as_reference(out, reference)


def test_kill_before_the_first_save_completes_starts_cleanly(tmp_path, runs, reference):
    out = tmp_path / "run"
    rc, log = runs(out, kill_at=1)
    assert rc == 137, log[-3000:]
    assert _states(out) == ["step-00000003.tmp"]
    assert os.listdir(out / "train_state" / "step-00000003.tmp") == ["draft_fp32.safetensors"]
    rc, log = runs(out, kill_at=-1)
    assert rc == 0, log[-3000:]
    assert "resuming from" not in log and "warning: skipped" not in log and "resume" not in log.lower()
    _assert_same_as_reference(out, reference)


def test_a_swapped_state_file_is_passed_over_never_loaded(tmp_path, runs, reference):
    out = tmp_path / "run"
    rc, log = runs(out, kill_at=2 * PER_SAVE)   # step 6 renamed into place, step 3 not yet removed
    assert rc == 137 and _states(out) == ["step-00000003", "step-00000006"], log[-3000:]
    swapped = out / "train_state" / "step-00000006" / "optimizer.safetensors"
    raw = bytearray(swapped.read_bytes())
    raw[len(raw) // 2] ^= 0xFF                  # one byte of tensor data: same size, still valid safetensors
    swapped.write_bytes(bytes(raw))
    rc, log = runs(out, kill_at=-1)
    assert rc == 0, log[-3000:]
    assert (f"warning: skipped an incomplete training state: {swapped.parent}: optimizer.safetensors differs from "
            f"what eagle3-train wrote (size or sha256)") in log, log[-3000:]
    assert f"resuming from {out / 'train_state' / 'step-00000003'} at step 3 " in log
    _assert_same_as_reference(out, reference)


# ================================================================================ 4. resume a different run
def test_resume_refuses_a_different_run_and_overwrite_starts_over(tmp_path, text_target, data, capsys):
    out, ref = tmp_path / "draft", tmp_path / "ref"
    _train(text_target, data, out)
    before = _tree(out)
    old_fp = file_fingerprint(data)

    with pytest.raises(StateError) as e:
        _train(text_target, data, out, "--lr", "0.002")
    assert str(e.value) == (f"{out}: holds a different run (lr: 0.001 -> 0.002). Re-run with the same data, target "
                            f"and recipe to resume, or pass --overwrite to start over")

    data.write_text("\n".join(_text_lines()[:-1]) + "\n")        # same path, one conversation fewer
    new_fp = file_fingerprint(data)
    with pytest.raises(StateError) as e:
        _train(text_target, data, out)
    assert str(e.value) == (f"{out}: holds a different run (data_content: {old_fp!r} -> {new_fp!r}). Re-run with "
                            f"the same data, target and recipe to resume, or pass --overwrite to start over")
    assert _tree(out) == before, "a refused re-run changed the output folder"

    capsys.readouterr()
    _train(text_target, data, out, "--overwrite")
    assert "resuming from" not in capsys.readouterr().out
    stored = json.loads((out / "train_state" / "step-00000003" / "train_config.json").read_text())
    assert stored["identity"]["data_content"] == new_fp
    _train(text_target, data, ref)
    _assert_same_tensors(out / "model.safetensors", ref / "model.safetensors")


# ========================================================================================== 5. recipe files
def test_recipe_with_an_unknown_key_names_it(tmp_path, text_target, data):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("lr: 0.001\nttt_step: 3\n")
    with pytest.raises(ConfigError) as e:
        main(["train", "--config", str(recipe), "--target", str(text_target), "--data", str(data),
              "-o", str(tmp_path / "draft")])
    assert str(e.value) == (f"{recipe}: unknown field 'ttt_step' (did you mean 'ttt_steps'?); fields are those of "
                            f"`eagle3-train train --help`")
    assert not (tmp_path / "draft").exists()


def test_recipe_with_a_wrong_type_names_field_and_type(tmp_path, text_target, data):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text('lr: "fast"\n')
    with pytest.raises(ConfigError) as e:
        main(["train", "--config", str(recipe), "--target", str(text_target), "--data", str(data),
              "-o", str(tmp_path / "draft")])
    assert str(e.value) == f"{recipe}: field 'lr' must be float, got str 'fast'"
    assert not (tmp_path / "draft").exists()


def test_recipe_is_applied_and_flags_override_it(tmp_path, text_target, data):
    recipe = tmp_path / "recipe.yaml"
    # 2e-3 and 5e-2 (no dot) are strings to YAML 1.1; a recipe must still read them as numbers
    recipe.write_text("lr: 2e-3\nmin_lr_ratio: 5e-2\nttt_steps: 2\nmax_steps: 3\nsave_every: 3\neval_every: 1000\n"
                      "eval_fraction: 0\ndraft_vocab_size: 300\nseed: 5\nprogress: false\n")
    out = tmp_path / "draft"
    main(["train", "--config", str(recipe), "--target", str(text_target), "--data", str(data), "-o", str(out),
          "--lr", "0.003", "--max-steps", "2"])
    cfg = json.loads((out / "train_state" / "step-00000002" / "train_config.json").read_text())["train_config"]
    assert cfg["lr"] == 0.003 and cfg["max_steps"] == 2                    # the command line wins
    assert cfg["min_lr_ratio"] == 0.05 and cfg["ttt_steps"] == 2 and cfg["draft_vocab_size"] == 300
    assert cfg["seed"] == 5 and cfg["progress"] is False and cfg["eval_fraction"] == 0.0
    assert cfg["ttt_decay"] == 0.8 and cfg["warmup_steps"] == 20           # untouched fields keep their defaults
    assert json.loads((out / "config.json").read_text())["draft_vocab_size"] == 300


# ============================================================================= 6. one-line errors, no traceback
def _bad_target(tmp: Path, text_target: Path, kind: str) -> str:
    if kind == "hub":
        return "nobody/no-such-model"
    p = tmp / kind
    if kind == "no-config":
        p.mkdir()
        (p / "tokenizer.json").write_text("{}")
    elif kind == "gpt2":
        p.mkdir()
        (p / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    elif kind == "truncated":
        shutil.copytree(text_target, p)
        w = p / "model.safetensors"
        os.truncate(w, w.stat().st_size // 2)
    return str(p)


@pytest.mark.parametrize("case", ["missing-data", "data-folder", "no-config", "gpt2", "truncated", "hub"])
def test_bad_inputs_fail_as_one_line(tmp_path, text_target, data, case):
    out = tmp_path / "draft"
    target, data_arg = str(text_target), str(data)
    if case == "missing-data":
        data_arg = str(tmp_path / "no-such.jsonl")
    elif case == "data-folder":
        data_arg = str(data.parent)
    else:
        target = _bad_target(tmp_path, text_target, case)
    r = _cli("train", "--target", target, "--data", data_arg, "-o", out, *FAST)
    line = _one_line_error(r)
    want = {
        # data-file cases: the message comes from trainer/data.py (read_jsonl)
        "missing-data": (f"{data_arg}: ", "no such"),
        "data-folder": (f"{data_arg}: is a folder",),
        "no-config": (f"{target}: no config.json in this folder; a model folder is what `save_pretrained` writes",),
        "gpt2": (f"{target}: unsupported target (architectures=['GPT2LMHeadModel'], model_type='gpt2'); "
                 f"supported: Qwen3ForCausalLM",),
        "truncated": (f"{target}: cannot load the target's weights (", "re-download or re-save the model"),
        "hub": ("nobody/no-such-model: HF_HUB_OFFLINE is set and it is not in the local Hub cache; download it "
                "once with network access",),
    }[case]
    assert line.startswith(want[0]) and all(w in line for w in want), line
    assert not (out / "model.safetensors").exists() and _states(out) == []
    if case in ("no-config", "gpt2", "hub"):     # the target is checked before the output folder is created
        assert not out.exists()


def test_media_no_answer_can_come_from_is_skipped_with_file_line_and_fix(tmp_path, cache):
    """An image with a side shorter than one image token; silent, empty, or longer than the target's window audio:
    each line is refused naming its file, line, the medium and the fix; the usable conversations next to them are
    kept and trained on."""
    import numpy as np
    import soundfile as sf
    from PIL import Image
    from eagle3_plugin.families import FAMILIES
    from eagle3_plugin.trainer.data import LoadReport, Tokenizer, load_samples
    Image.new("RGB", (8, 8), "white").save(tmp_path / "dot.png")
    Image.new("RGB", (3000, 20), "white").save(tmp_path / "strip.png")
    shutil.copy(fixtures.path("images/receipt.png"), tmp_path / "receipt.png")
    sf.write(tmp_path / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    sf.write(tmp_path / "long.wav", np.tile(fixtures.load_audio("audio/hello.wav")[0], 4)[:6 * 16000], 16000)
    shutil.copy(fixtures.path("audio/hello.wav"), tmp_path / "hello.wav")

    def row(kind, name):
        return {"id": name, "conversations": [{"role": "user", "content": [{"type": kind, kind: name},
                                                                          {"type": "text", "text": "What is it?"}]},
                                              {"role": "assistant", "content": "Something."}]}
    cases = {"qwen3_vl": (fixtures.competent_target("qwen3_vl-reader"), "image", ["dot.png", "strip.png",
                                                                                 "receipt.png"],
                          ["dot.png is 8x8 px: a side is shorter than one image token of this target (32 px",
                           "strip.png is 3000x20 px: a side is shorter than one image token"]),
             "qwen2_audio": (fixtures.competent_target("qwen2_audio-listener"), "audio",
                             ["silent.wav", "empty.wav", "long.wav", "hello.wav"],
                             ["audio silent.wav is silent (peak amplitude 0.0e+00 over 16000 samples)",
                              "audio empty.wav has no samples",
                              "audio long.wav lasts 6.0 s, longer than the target's 5 s window (its processor keeps "
                              "only the first 5 s)"])}
    for family, (target, kind, names, messages) in cases.items():
        data = tmp_path / f"{family}.jsonl"
        data.write_text("".join(json.dumps(row(kind, n)) + "\n" for n in names))
        report = LoadReport()
        samples = load_samples(data, Tokenizer(target, FAMILIES[family]), 2048, report, progress=False)
        assert [s.id for s in samples] == [names[-1]] and report.kept == 1 and len(report.errors) == len(names) - 1
        for line, (err, message) in enumerate(zip(report.errors, messages), 1):
            assert str(err).startswith(f"{data}:{line}: ") and message in str(err), str(err)
            assert "— fix: give" in str(err) or "— fix: split the clip" in str(err)
