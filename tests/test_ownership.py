"""What partialft may delete (issue 21): only files it recorded writing, with the bytes it wrote;
no output inside another; each verb's --overwrite only for its own kind; only its own temporary
files; and every command killed before (or while) its marker lands reruns."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import assert_user_error, cli
from test_crash import kill_at

from partialft.cli import main
from partialft.errors import PartialFTError
from partialft.training.outputs import (
    MARKER,
    check_claim,
    clear,
    foreign_entries,
    read_marker,
    remove_recorded,
    write_marker,
)
from partialft.training.rundir import RunDir
from partialft.utils.io import (
    append_line,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    is_tmp,
    record_dir,
    record_open,
    sha256_and_size,
)

TINY = ["--model", "test_vit", "--no-pretrained", "--dataset", "synthetic:4", "--img-size", "32",
        "--max-per-split", "24", "--batch-size", "8", "--epochs", "1", "--amp", "no",
        "--no-progress"]
TRAIN = ["train", *TINY, "--method", "linear"]
SELECT = ["select", *TINY[:-1]]  # select has no --no-progress


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished linear run written by the real CLI (copied by tests that change it)."""
    out = tmp_path_factory.mktemp("own") / "run"
    assert main([*TRAIN, "--log-with", "csv", "--out", str(out)]) == 0
    return out


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, symlinks=True)
    (dest / ".lock").unlink(missing_ok=True)
    return dest


def _names(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


def _marked(path: Path, kind: str = "train") -> Path:
    path.mkdir(parents=True)
    write_marker(path, kind)
    return path


# --- 1. the manifest ------------------------------------------------------------------------

def test_every_file_a_run_wrote_is_recorded_with_its_bytes(run):
    files = read_marker(run)["files"]
    on_disk = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()} - {
        MARKER, ".lock"}
    assert on_disk <= set(files)  # README.md, log.csv, metrics.jsonl, delta, summary, ...
    assert {"README.md", "log.csv", "metrics.jsonl", "delta.safetensors"} <= on_disk
    for rel in on_disk:
        sha, size = sha256_and_size(run / rel)
        assert (files[rel]["sha256"], files[rel]["size"]) == (sha, size), rel
    assert foreign_entries(run, "train") == []


@pytest.mark.parametrize("edit", ["README.md", "log.csv", "config.yaml", "metrics.jsonl",
                                  "summary.json"])
def test_overwrite_refuses_a_file_the_user_edited_and_deletes_nothing(run, tmp_path, capsys,
                                                                      edit):
    out = _copy(run, tmp_path / "r")
    with open(out / edit, "a") as fh:
        fh.write("my note\n")
    before = _names(out)
    assert main([*TRAIN, "--log-with", "csv", "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert f"holds {edit}, which partialft did not write (or which changed since)" in err
    assert _names(out) == before and (out / edit).read_text().endswith("my note\n")


@pytest.mark.parametrize("user", ["tensorboard/note.txt", "wandb/note.txt", "state/mine.txt",
                                  "events.out.tfevents.1.mine", "tensorboard/events.out.tfevents.9",
                                  "summary.json.bak", ".notes.abcdefgh.tmp", "sub/scores.json"])
def test_a_user_file_under_any_name_stops_overwrite(run, tmp_path, capsys, user):
    out = _copy(run, tmp_path / "r")
    (out / user).parent.mkdir(parents=True, exist_ok=True)
    (out / user).write_text("mine")
    assert main([*TRAIN, "--log-with", "csv", "--out", str(out), "--overwrite"]) == 2
    assert "did not write" in capsys.readouterr().err
    assert (out / user).read_text() == "mine"
    assert (out / "delta.safetensors").is_file()


def test_overwrite_replaces_a_run_whose_files_are_all_unchanged(run, tmp_path):
    out = _copy(run, tmp_path / "r")
    old = read_marker(out)["files"]["delta.safetensors"]
    assert main([*TRAIN, "--lr", "3e-3", "--out", str(out), "--overwrite"]) == 0
    files = read_marker(out)["files"]
    assert files["delta.safetensors"]["sha256"] != old["sha256"]
    assert "log.csv" not in files and not (out / "log.csv").exists()  # the old run's, deleted


def test_a_crash_between_recording_and_renaming_leaves_either_version_recognised(tmp_path,
                                                                                monkeypatch):
    out = _marked(tmp_path / "r")
    atomic_write_text(out / "a.txt", "one")
    real = os.replace

    def crash(src, dst):
        if os.path.basename(str(dst)) == "a.txt":
            raise KeyboardInterrupt  # recorded, not yet renamed
        real(src, dst)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(out / "a.txt", "two")
    monkeypatch.setattr(os, "replace", real)
    assert (out / "a.txt").read_text() == "one"
    assert foreign_entries(out) == []  # the old bytes are the previous record
    entry = read_marker(out)["files"]["a.txt"]
    assert entry["prev"]["sha256"] == sha256_and_size(out / "a.txt")[0]
    (out / "a.txt").write_text("three")
    assert foreign_entries(out) == [out / "a.txt"]


def test_appends_third_party_files_and_links_are_recorded(tmp_path):
    out = _marked(tmp_path / "r")
    append_line(out / "metrics.jsonl", '{"epoch": 1}')
    append_line(out / "metrics.jsonl", '{"epoch": 2}')
    (out / "tb").mkdir()
    (out / "tb" / "events.out.tfevents.1").write_bytes(b"growing")
    record_open(out / "tb" / "events.out.tfevents.1")
    assert foreign_entries(out) == []
    (out / "link").symlink_to(out / "metrics.jsonl")
    assert foreign_entries(out) == [out / "link"]  # a link nobody recorded
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write("mine\n")
    assert out / "metrics.jsonl" in foreign_entries(out)


def test_writes_outside_a_marked_dir_record_nothing_and_entries_of_gone_files_go(tmp_path):
    atomic_write_json(tmp_path / "free.json", {})  # no marker anywhere above: nothing to do
    out = _marked(tmp_path / "r")
    atomic_write_text(out / "state" / "tensors-1", "1")
    (out / "state" / "tensors-1").unlink()
    atomic_write(out / "b.bin", lambda p: p.write_bytes(b"\0" * 10))
    assert set(read_marker(out)["files"]) == {"b.bin", "state"}  # the folder it made, too
    assert read_marker(out)["files"]["state"] == {"dir": True}
    assert read_marker(out)["files"]["b.bin"]["size"] == 10


def test_a_stray_marker_file_above_is_never_rewritten(tmp_path):
    for text in ('{"kind": "train", "settings": {}}', '{"notes": "mine"}', "not json"):
        (tmp_path / MARKER).write_text(text)
        atomic_write_text(tmp_path / "sub" / "a.txt", "a")
        append_line(tmp_path / "sub" / "m.jsonl", "{}")
        assert (tmp_path / MARKER).read_text() == text


def test_a_dir_from_before_the_manifest_is_never_cleared(tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"kind": "train", "settings": {}}))
    (out / "summary.json").write_text("{}")
    assert main([*TRAIN, "--out", str(out), "--overwrite"]) == 2
    assert "older than its file records" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == "{}"


def test_a_resumed_run_clears_only_its_own_log(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "r"
    argv = [*TRAIN, "--epochs", "2", "--out", str(out)]
    assert main([*argv, "--max-steps", "2"]) == 0
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events and all(str(e.relative_to(out)) in read_marker(out)["files"] for e in events)
    note = out / "tensorboard" / "note.txt"
    note.write_text("mine")
    assert main([*argv, "--resume"]) == 0
    assert note.read_text() == "mine"
    assert not any(e.exists() for e in events)  # the stopped run's log, replayed afresh
    assert foreign_entries(out, "train") == [note]


def test_a_trackers_files_are_its_own_before_they_are_recorded(tmp_path):
    """Killed between starting TensorBoard and recording its files by name: the folder was
    claimed for it first, so what it made is known; nothing else there is."""
    import time

    from partialft.utils.io import record_claim

    out = _marked(tmp_path / "r")
    record_claim(out / "tensorboard", {"writer": "tensorboard", "pid": 4242,
                                       "since": time.time() - 1})
    tb = out / "tensorboard"
    (tb / f"{time.time():.4f}").mkdir(parents=True)
    made = [tb / "events.out.tfevents.1796.vm.local.4242.0",
            next(tb.iterdir()) / "hparams.yml"]
    for path in made:
        path.write_text("x")
    assert foreign_entries(out) == []
    mine = [tb / "events.out.tfevents.1796.vm.4243.0", tb / "note.txt", tb / "old" / "a.txt"]
    for path in mine:
        path.parent.mkdir(exist_ok=True)
        path.write_text("mine")
    assert foreign_entries(out) == sorted([mine[0], mine[1], tb / "old"])
    remove_recorded(out, "tensorboard")  # what a resumed run clears
    assert not any(p.exists() for p in made) and all(p.exists() for p in mine)


def test_remove_recorded_keeps_what_is_not_recorded(tmp_path):
    out = _marked(tmp_path / "r")
    atomic_write_text(out / "state" / "a", "a")
    atomic_write_text(out / "state" / "deep" / "b", "b")
    (out / "state" / "empty").mkdir()
    remove_recorded(out, "state")
    assert _names(out / "state") == ["empty"]  # a folder of the user's, even an empty one


# --- 2. nested outputs ------------------------------------------------------------------------

@pytest.mark.parametrize("inner", ["B", "x/y/B", "state/B"])
@pytest.mark.parametrize("kind", ["train", "report"])
def test_an_output_inside_another_is_refused(run, tmp_path, capsys, inner, kind):
    outer = _copy(run, tmp_path / "A") if kind == "train" else _marked(tmp_path / "A", kind)
    before = _names(outer)
    assert main([*TRAIN, "--out", str(outer / inner)]) == 2
    assert "outputs do not nest" in capsys.readouterr().err
    assert _names(outer) == before
    assert main(["report", str(run), "--out", str(outer / inner)]) == 2
    assert "outputs do not nest" in capsys.readouterr().err


def test_a_pipelines_stages_are_recorded_and_checked_by_their_own_manifest(tmp_path):
    outer = tmp_path / "A"
    with RunDir(outer, kind="fapft", resume=True):
        with RunDir(outer / "full", kind="train"):
            atomic_write_text(outer / "full" / "summary.json", "{}")
        atomic_write_text(outer / "angles.json", "{}")
    assert read_marker(outer)["dirs"] == {"full": "train"}
    assert "summary.json" in read_marker(outer / "full")["files"]
    assert foreign_entries(outer, "fapft") == []
    # held no more: a new directory inside is refused; the recorded stage may be reopened
    with pytest.raises(PartialFTError, match="outputs do not nest"):
        RunDir(outer / "other", kind="train")
    assert check_claim(outer / "full", "train", reuse=True) is False
    with pytest.raises(PartialFTError, match="outputs do not nest"):
        check_claim(outer / "full", "report")  # recorded as a train stage only
    (outer / "full" / "notes.md").write_text("mine")
    assert foreign_entries(outer, "fapft") == [outer / "full" / "notes.md"]


@pytest.mark.parametrize("copy", ["backup_of_run", "full_copy"])
def test_overwrite_refuses_a_copy_or_folder_the_user_put_inside(run, tmp_path, capsys, copy):
    outer = _copy(run, tmp_path / "A")
    if copy == "backup_of_run":
        _copy(run, outer / copy)  # marked, but not a stage A recorded
    else:
        (outer / copy / "empty_sub").mkdir(parents=True)
    before = _names(outer)
    assert main([*TRAIN, "--log-with", "csv", "--out", str(outer), "--overwrite"]) == 2
    assert f"holds {copy}" in capsys.readouterr().err
    assert _names(outer) == before


def test_a_stage_killed_before_its_marker_is_still_the_pipelines(tmp_path):
    outer = _marked(tmp_path / "A", "fapft")
    record_dir(outer / "full", "train")
    (outer / "full").mkdir()
    (outer / "full" / ".lock").write_text("")
    (outer / "full" / "..partialft.pft-abcd1234.tmp").write_text("{")
    assert foreign_entries(outer) == []
    (outer / "full" / "mine.txt").write_text("x")
    assert foreign_entries(outer) == [outer / "full" / "mine.txt"]


# --- 3. each verb replaces only its own kind ---------------------------------------------------

@pytest.mark.parametrize("kind", ["soup", "fapft", "select", "demo", "report", "bench",
                                  "pretrain", "export"])
def test_check_claim_overwrite_only_of_its_own_kind(tmp_path, kind):
    out = _marked(tmp_path / "t", "train")
    atomic_write_text(out / "delta.safetensors", "x")
    with pytest.raises(PartialFTError, match=f"partialft train directory, not an? {kind} one; "
                                             f"overwrite=True replaces only an earlier "
                                             f"{kind}"):
        check_claim(out, kind, overwrite=True)
    other = _marked(tmp_path / "o", kind)
    atomic_write_text(other / "summary.json", "{}")
    with pytest.raises(PartialFTError, match=f"partialft {kind} directory, not a train one"):
        check_claim(other, "train", overwrite=True)
    assert (out / "delta.safetensors").is_file() and (other / "summary.json").is_file()


@pytest.mark.parametrize("verb", ["report", "export", "bench", "soup", "select", "pretrain"])
def test_another_verbs_overwrite_never_replaces_a_run_dir(run, run2, tmp_path, capsys, verb):
    target = _copy(run, tmp_path / "t")
    argv = {"report": ["report", str(run)],
            "export": ["export", str(run)],
            "bench": ["bench", "--model", "test_vit", "--methods", "linear", "--img-size", "32"],
            "soup": ["soup", str(run), str(run2)],
            "select": [*SELECT, "--selector", "grad"],
            "pretrain": ["pretrain", "--model", "test_vit", "--no-progress"]}[verb]
    before = _names(target)
    assert main([*argv, "--out", str(target), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert f"is a partialft train directory, not a{'n' if verb == 'export' else ''} {verb} " \
        "one; --overwrite replaces only" in err, err
    assert _names(target) == before


def test_an_empty_marked_dir_of_another_kind_is_remarked(tmp_path):
    out = _marked(tmp_path / "e", "report")
    assert check_claim(out, "train") is True
    with RunDir(out, kind="train"):
        pass
    assert read_marker(out)["kind"] == "train"


# --- 4. temporary files -------------------------------------------------------------------------

def test_partialfts_temporary_names_are_its_own():
    assert is_tmp(".summary.json.pft-ab12cd_3.tmp") and is_tmp("..partialft.pft-zzzzzzzz.tmp")
    for name in (".summary.json.ab12cd_3.tmp", ".x.pft-ABCDEFGH.tmp", ".x.pft-abc.tmp",
                 "x.pft-abcdefgh.tmp", ".x.pft-abcdefgh.tmp.bak"):
        assert not is_tmp(name), name


def test_an_atomic_write_leaves_only_a_tagged_temporary_file(tmp_path):
    seen = []

    def write(tmp: Path) -> None:
        seen.append(tmp.name)
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(tmp_path / "a.json", write)
    assert is_tmp(seen[0]) and list(tmp_path.iterdir()) == []


# every verb that writes a dir, killed just before its marker lands, then the same command again
KILLED = {
    "train": TRAIN,
    "report": ["report", "{run}"],
    "export": ["export", "{run}"],
    "bench": ["bench", "--model", "test_vit", "--methods", "linear", "--batch-size", "4",
              "--img-size", "32", "--steps", "1", "--warmup", "1"],
    "select": [*SELECT, "--selector", "grad", "--batches", "1"],
    "pretrain": ["pretrain", "--model", "test_vit", "--categories", "2", "--steps", "2",
                 "--warmup-steps", "0", "--batch-size", "2", "--val-per-category", "1",
                 "--eval-every", "1", "--checkpoint-every", "1", "--log-every", "1",
                 "--iters", "6", "--chains", "8", "--no-progress"],
    "soup": ["soup", "{run}", "{run2}", "--no-eval"],
    "fapft": ["fapft", *TINY, "--topk", "1", "--mode", "large", "--selector", "grad"],
    "demo": ["demo", "--epochs", "1", "--max-per-split", "64", "--no-progress"],
}


@pytest.fixture(scope="module")
def run2(run: Path) -> Path:
    out = run.parent / "run2"
    assert main([*TRAIN, "--lr", "3e-3", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
@pytest.mark.parametrize("verb", sorted(KILLED))
def test_a_command_killed_before_its_marker_lands_reruns(verb, run, run2, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [a.replace("{run}", str(run)).replace("{run2}", str(run2)) for a in KILLED[verb]]
    argv += ["--out", str(out)]
    kill_at(argv, MARKER, 1, "before")
    where = out if verb != "soup" else tmp_path / ".out.partial"
    assert any(is_tmp(p.name) for p in where.iterdir())  # the marker's temporary file
    if verb in ("train", "pretrain"):
        assert main([*argv, "--resume"]) == 0, capsys.readouterr().err
    assert main([*argv, "--overwrite"] if verb in ("train", "pretrain") else argv) == 0, \
        capsys.readouterr().err
    assert not [p for p in out.rglob("*") if is_tmp(p.name)]
    assert foreign_entries(out) == []
    assert main([*argv, "--overwrite"]) == 0, capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("nth", [2, 4, 7])
def test_a_run_killed_while_recording_a_write_resumes_and_overwrites(tmp_path, capsys, nth):
    out = tmp_path / "r"
    argv = [*TRAIN, "--epochs", "2", "--checkpoint-every", "1", "--out", str(out)]
    kill_at(argv, MARKER, nth, "before")
    assert main([*argv, "--resume"]) == 0, capsys.readouterr().err
    assert foreign_entries(out, "train") == []
    kill_at(argv[:-2] + ["--lr", "3e-3", "--out", str(out), "--overwrite"], MARKER, nth, "after")
    assert main([*argv, "--overwrite"]) == 0, capsys.readouterr().err
    assert foreign_entries(out, "train") == []


# --- 5. nothing left behind by a kill at the end ---------------------------------------------

@pytest.mark.slow
def test_a_run_killed_right_after_its_summary_loses_its_state_on_resume(tmp_path, capsys):
    out = tmp_path / "r"
    argv = [*TRAIN, "--out", str(out)]
    kill_at(argv, "summary.json", 1, "after")
    assert (out / "state").is_dir()
    readme, summary = (out / "README.md").read_text(), (out / "summary.json").read_text()
    (out / "state" / "mine.txt").write_text("keep")
    assert main([*argv, "--resume"]) == 0
    assert _names(out / "state") == ["mine.txt"]  # partialft's resume state is gone, not yours
    (out / "state" / "mine.txt").unlink()
    assert (out / "README.md").read_text() == readme
    assert (out / "summary.json").read_text() == summary
    kill_at([*argv, "--overwrite", "--keep-state"], "summary.json", 1, "after")
    assert main([*argv, "--keep-state", "--resume"]) == 0
    assert (out / "state" / "state.json").is_file()  # asked for


@pytest.mark.slow
def test_a_killed_bench_leaves_its_scratch_inside_its_out_and_a_rerun_removes_it(tmp_path,
                                                                                 capsys):
    out = tmp_path / "b"
    argv = [*KILLED["bench"], "--out", str(out)]
    kill_at(argv, MARKER, 3, "after")  # the bench's scratch run has started
    scratch = [p for p in out.iterdir() if is_tmp(p.name)]
    assert scratch and all(p.is_dir() for p in scratch)
    assert list(tmp_path.iterdir()) == [out]
    assert main(argv) == 0, capsys.readouterr().err
    assert not any(p.exists() for p in scratch)
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "bench.json", "bench.md",
                                                     "bench.png"]


@pytest.mark.slow
@pytest.mark.parametrize("name,when", [("bench.json", "before"), ("bench.md", "after"),
                                       ("bench.png", "after")])
def test_a_bench_killed_at_its_writes_is_finished_by_the_same_command(tmp_path, capsys, name,
                                                                      when):
    """No --overwrite needed: the marker records the bench's options and says complete only
    after its last file; a finished bench still needs --overwrite."""
    out = tmp_path / "b"
    argv = [*KILLED["bench"], "--out", str(out)]
    kill_at(argv, name, 1, when)
    assert main(argv) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "bench.json", "bench.md", "bench.png"]
    assert not any(is_tmp(p.name) for p in out.rglob("*"))
    capsys.readouterr()
    assert main(argv) == 2 and "already exists" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("verb", sorted(set(KILLED) | {"select-compare"}))
def test_every_verb_takes_a_relative_out_and_replaces_it(verb, run, run2, tmp_path, capsys,
                                                         monkeypatch):
    """`make demo` writes to the relative runs/demo: every verb records its files and stages
    (fapft's, select --compare's and the demo's runs) under a relative --out as under an
    absolute one, and --overwrite then replaces exactly what it wrote."""
    if verb == "demo":
        pytest.importorskip("matplotlib")
    argv = KILLED["select"][:-4] + ["--compare", "grad,angle", "--batches", "1"] \
        if verb == "select-compare" else KILLED[verb]
    argv = [a.replace("{run}", str(run)).replace("{run2}", str(run2)) for a in argv]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    assert main([*argv, "--out", "runs/x"]) == 0, capsys.readouterr().err
    assert foreign_entries(tmp_path / "runs" / "x") == []  # all of it recorded
    assert main([*argv, "--out", "runs/x", "--overwrite"]) == 0, capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("verb", sorted(KILLED))
@pytest.mark.parametrize("target", ["empty dir", "nowhere"])
def test_a_symlinked_out_is_refused_before_any_work(verb, target, run, run2, tmp_path, capsys):
    """--out resolved through a link would be written (and later cleared) somewhere else: every
    verb refuses a link, to an empty folder or dangling, and leaves its target as it was."""
    argv = [a.replace("{run}", str(run)).replace("{run2}", str(run2)) for a in KILLED[verb]]
    dest = tmp_path / "dest"
    if target == "empty dir":
        dest.mkdir()
    link = tmp_path / "link"
    link.symlink_to(dest)
    code, _, err = cli(capsys, *argv, "--out", link)
    assert_user_error(code, err, f"--out {link} is a symbolic link")
    assert link.is_symlink() and (sorted(dest.iterdir()) == [] if dest.exists() else True)


def test_clear_deletes_the_marker_last(tmp_path, monkeypatch):
    out = _marked(tmp_path / "r")
    for name in ("a", "b", "c/d"):
        atomic_write_text(out / name, name)
    order = []
    real_unlink = Path.unlink

    def unlink(self, missing_ok=False):
        order.append(self.name)
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    clear(out, "train")
    monkeypatch.setattr(Path, "unlink", real_unlink)
    assert order[-1] == MARKER and _names(out) == []
