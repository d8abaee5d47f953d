"""Output-folder safety (eagle3_plugin.outputs): we write only into missing, empty or our own folders, and
--overwrite removes only what we wrote."""
import json
import os
import stat

import pytest

from eagle3_plugin.outputs import (MARKER, OutputError, atomic_write, claim_output_dir, is_ours,
                                   record_written)


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(p):
    return stat.S_IMODE(p.stat().st_mode)


def test_missing_folder_is_created_with_a_marker_and_umask_modes(tmp_path, umask022):
    out = claim_output_dir(tmp_path / "a" / "draft", "draft")
    marker = json.loads((out / MARKER).read_text())
    assert marker["kind"] == "draft" and marker["tool"] == "eagle3-plugin" and marker["written"] == []
    assert marker["version"]
    assert _mode(out) == 0o755 and _mode(out / MARKER) == 0o644
    atomic_write(out / "x.txt", lambda tmp: tmp.write_text("x"))
    assert _mode(out / "x.txt") == 0o644
    assert is_ours(out, "draft") and not is_ours(out, "features") and not is_ours(tmp_path, "draft")


def test_empty_folder_is_accepted(tmp_path):
    (tmp_path / "d").mkdir()
    assert is_ours(claim_output_dir(tmp_path / "d", "features"), "features")


def test_foreign_folder_is_refused_even_with_overwrite(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "notes.md").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match=r"d: not empty \(notes.md\) and not written by eagle3-train.*"
                                              r"[Pp]ick an empty or new folder"):
            claim_output_dir(d, "draft", overwrite=overwrite)
    assert sorted(p.name for p in d.iterdir()) == ["notes.md"]      # refused before any work: no marker either


def test_own_folder_is_reused_and_overwrite_deletes_only_what_we_wrote(tmp_path):
    d = claim_output_dir(tmp_path / "d", "draft")
    record_written(d, "model.safetensors", "train_state")
    record_written(d, "model.safetensors")                             # recorded once
    (d / "model.safetensors").write_text("w")
    (d / "train_state").mkdir()
    (d / "train_state" / "rng.pt").write_text("r")
    (d / "notes.md").write_text("mine")
    assert json.loads((d / MARKER).read_text())["written"] == ["model.safetensors", "train_state"]
    claim_output_dir(d, "draft")                                       # resume: nothing removed
    assert (d / "model.safetensors").exists() and (d / "train_state" / "rng.pt").exists()
    claim_output_dir(d, "draft", overwrite=True)
    assert sorted(p.name for p in d.iterdir()) == [MARKER, "notes.md"]
    assert json.loads((d / MARKER).read_text())["written"] == []
    claim_output_dir(d, "draft", overwrite=True)                       # listed entries may already be gone


def test_other_kind_is_refused_even_with_overwrite(tmp_path):
    d = claim_output_dir(tmp_path / "f", "features")
    record_written(d, "meta.json")
    (d / "meta.json").write_text("{}")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="holds eagle3-train's features output, and this command writes a draft folder"):
            claim_output_dir(d, "draft", overwrite=overwrite)
    assert (d / "meta.json").exists()


def test_a_file_as_output_is_refused(tmp_path):
    f = tmp_path / "draft"
    f.write_text("not a folder")
    with pytest.raises(OutputError, match="draft: is a file, not a folder"):
        claim_output_dir(f, "draft", overwrite=True)
    assert f.read_text() == "not a folder"


def test_target_data_and_features_cannot_be_the_output(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    data = tmp_path / "data" / "train.jsonl"
    data.parent.mkdir()
    data.write_text("{}\n")
    protect = (target, data)
    with pytest.raises(OutputError, match=r"target: the draft output folder is .*target, which this command reads"):
        claim_output_dir(target, "draft", protect=protect, overwrite=True)
    with pytest.raises(OutputError, match=r"target/draft: the draft output folder is inside .*target"):
        claim_output_dir(target / "draft", "draft", protect=protect)
    with pytest.raises(OutputError, match=r"the draft output folder contains .*train.jsonl"):
        claim_output_dir(data.parent, "draft", protect=protect)
    with pytest.raises(OutputError, match="the features output folder contains"):
        claim_output_dir(tmp_path, "features", protect=protect)
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(OutputError, match="link: the draft output folder is"):
        claim_output_dir(tmp_path / "link", "draft", protect=protect)
    assert claim_output_dir(tmp_path / "draft", "draft", protect=protect).is_dir()
    assert list(target.iterdir()) == []


def test_marker_entries_never_reach_outside_the_folder(tmp_path):
    d = claim_output_dir(tmp_path / "d", "draft")
    with pytest.raises(OutputError, match="refusing entry '../victim'"):
        record_written(d, "../victim")
    victim = tmp_path / "victim"
    victim.write_text("keep")
    m = json.loads((d / MARKER).read_text())
    (d / "ours.txt").write_text("x")
    (d / MARKER).write_text(json.dumps({**m, "written": ["ours.txt", "../victim"]}))   # hand-edited marker
    with pytest.raises(OutputError, match="refusing entry"):
        claim_output_dir(d, "draft", overwrite=True)
    assert victim.read_text() == "keep" and (d / "ours.txt").exists()          # refused before deleting anything


def test_record_written_needs_a_claimed_folder_and_a_bad_marker_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(OutputError, match="claim the folder"):
        record_written(tmp_path / "d", "config.json")
    (tmp_path / "d" / MARKER).write_text("{not json")
    with pytest.raises(OutputError, match="unreadable"):
        claim_output_dir(tmp_path / "d", "draft")
    assert not is_ours(tmp_path / "d", "draft")


def test_output_error_is_a_one_line_exit(tmp_path):
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(SystemExit) as e:
        claim_output_dir(f, "tiny-target")
    assert "\n" not in str(e.value) and str(f) in str(e.value)
    with pytest.raises(ValueError, match="unknown output kind"):
        claim_output_dir(tmp_path / "x", "drafts")


def test_atomic_write_failure_keeps_the_old_file_and_no_temp(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("old")

    def fail(tmp):
        tmp.write_text("half")
        raise OSError("disk full")
    with pytest.raises(OSError):
        atomic_write(p, fail)
    assert p.read_text() == "old" and [x.name for x in tmp_path.iterdir()] == ["a.txt"]
