"""kill -9 of every verb that writes files, then the same command again (benchmarks/kill_all.py).

Each verb runs once uninterrupted, counting its os.replace calls (every atomic write, the
``.partialft`` marker, soup's renames); then a forked copy of this process runs it again and
SIGKILLs itself just before or just after a chosen os.replace; the same command is rerun here
(``--resume`` added for train and pretrain once the run dir is marked, their documented
rerun) and must exit 0 (or,
killed after its very last write, say the finished output already exists), leave no temporary
file, and give the uninterrupted run's results, compared on content.

Here each verb is killed at a sample of points (``Case.sample``) and just before its marker
lands; ``python benchmarks/kill_all.py`` tries every os.replace of every verb (the sweep whose
counts docs/reliability.md quotes).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from partialft.training.outputs import read_marker
from partialft.training.reruns import finish, open_output, resumable
from partialft.utils.io import atomic_write_text, remove_stale_tmp_of

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("kill_all", ROOT / "benchmarks" / "kill_all.py")
kill_all = importlib.util.module_from_spec(_spec)
sys.modules["kill_all"] = kill_all  # dataclasses look their module up there
_spec.loader.exec_module(kill_all)

# verbs whose sample takes more than a few seconds on one core
SLOW = {"train", "fapft", "fapft-auto", "select-compare", "pretrain", "soup-overwrite", "report"}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return kill_all.make_inputs(tmp_path_factory.mktemp("kill_inputs"))


def _sweep(name: str, inputs: Path, work: Path, sample: list[str]) -> None:
    case = kill_all.CASES[name]
    case = type(case)(**{**case.__dict__, "sample": sample})
    outcome = kill_all.sweep(case, inputs, work, sample=True)
    assert outcome.tried > 0
    assert outcome.failures == [], outcome.failures
    assert outcome.passed == outcome.tried


def _params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


# bench is swept by benchmarks/kill_all.py only (a minute of measuring per sample)
@pytest.mark.parametrize("verb", _params([v for v in kill_all.CASES if v != "bench"]))
def test_a_verb_killed_at_its_writes_reruns_to_the_uninterrupted_result(verb, inputs,
                                                                        tmp_path):
    """Killed at the verb's sample of writes (``Case.sample``: every write of eval, angles
    and export but the marker's; after the marker, in the middle and at the end of the
    others)."""
    if verb == "report":
        pytest.importorskip("matplotlib")
    _sweep(verb, inputs, tmp_path, kill_all.CASES[verb].sample)


@pytest.mark.parametrize("verb", _params(["train", "fapft", "select", "select-compare", "soup",
                                          "report", "export", "pretrain", "eval"]))
def test_a_verb_killed_just_before_its_marker_lands_reruns(verb, inputs, tmp_path):
    """Killed with the .partialft marker's temporary file written, not yet renamed (eval: the
    run dir's marker, rewritten to record eval.json)."""
    _sweep(verb, inputs, tmp_path, ["first:before"])


# --- the mechanism: training/reruns.py -------------------------------------------------------

def test_an_incomplete_output_of_the_same_settings_is_reused_a_complete_one_is_not(tmp_path):
    from partialft.errors import PartialFTError

    out, settings = tmp_path / "out", {"inputs": ["a", "b"], "k": (1, 2)}
    with open_output(out, "report", settings, overwrite=False):
        atomic_write_text(out / "report.md", "half")  # killed here: never finished
    assert resumable(out, "report", settings)
    with pytest.raises(PartialFTError, match="already exists; pass overwrite=True") as err:
        open_output(out, "report", {**settings, "k": (1, 3)}, overwrite=False)
    assert "already exists; pass --overwrite" in err.value.for_cli()  # the CLI's words
    with pytest.raises(PartialFTError, match="is a partialft report directory, not an export"):
        open_output(out, "export", settings, overwrite=False)
    with open_output(out, "report", settings, overwrite=False) as run:  # the rerun
        finish(run)
    assert not resumable(out, "report", settings)
    with pytest.raises(PartialFTError, match="already exists; pass overwrite=True"):
        open_output(out, "report", settings, overwrite=False)
    open_output(out, "report", settings, overwrite=True).close()  # --overwrite: as before
    assert not (out / "report.md").exists()


def test_only_the_targets_own_stale_temporary_files_are_removed(tmp_path):
    target = tmp_path / "eval.json"
    stale = [tmp_path / ".eval.json.pft-ab12cd_9.tmp", tmp_path / ".eval.json.pft-0000zz_1.tmp"]
    # a user's look-alikes without partialft's tag survive, as do other targets' temp files
    kept = [tmp_path / ".other.json.pft-ab12cd_9.tmp", tmp_path / "eval.json.pft-ab12cd_9.tmp",
            tmp_path / ".eval.json.mine.tmp", tmp_path / ".eval.json.ab12cd_9.tmp"]
    for path in [*stale, *kept]:
        path.write_text("x")
    remove_stale_tmp_of(target)
    assert [p.exists() for p in stale] == [False, False]
    assert all(p.exists() for p in kept)


def test_a_killed_export_is_redone_checked_and_readable(inputs, tmp_path):
    """Killed after its files were written but before they were checked: the rerun (no
    --overwrite) exports again; the files get the umask's permissions."""
    from partialft.analysis import export as ex

    out = tmp_path / "exp"
    argv = ["export", str(inputs / "a"), "--out", str(out)]
    pid = os.fork()
    if pid == 0:  # killed between writing and checking the export
        ex._compare = lambda *a, **k: os.kill(os.getpid(), 9)
        with kill_all._quiet():
            kill_all.cli(argv)
        os._exit(3)
    assert os.waitpid(pid, 0)[1] & 0x7F == 9
    assert (out / "model.safetensors").is_file() and not read_marker(out).get("complete")
    old = os.umask(0o022)
    try:
        assert kill_all.cli(argv) == 0
    finally:
        os.umask(old)
    assert read_marker(out)["complete"]
    for name in ("config.json", "model.safetensors", "README.md"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name
    assert kill_all.cli(argv) == 2  # complete: replacing it needs --overwrite


# --- soup: a kill between its two renames ----------------------------------------------------

def _soup_argv(inputs: Path, out: Path) -> list[str]:
    return ["soup", str(inputs / "a"), str(inputs / "b"), "--out", str(out), "--overwrite"]


def test_a_soup_killed_between_its_renames_is_finished_by_the_rerun(inputs, tmp_path):
    import shutil

    ref, out = tmp_path / "ref" / "soup", tmp_path / "run" / "soup"
    for path in (ref, out):
        shutil.copytree(inputs / "old-soup", path)
    old = json.loads((out / "summary.json").read_text())
    # the renames: --out to .soup.old, then .soup.partial to --out; kill between them
    _, replaces = kill_all.record_replaces(_soup_argv(inputs, ref))
    assert kill_all.run_killed(_soup_argv(inputs, out), replaces.index(".soup.old") + 1, "after")
    aside = out.parent / ".soup.old"
    assert not out.exists() and aside.is_dir()
    assert kill_all.cli(_soup_argv(inputs, out)) == 0  # the same command
    assert sorted(p.name for p in out.parent.iterdir()) == ["soup"]  # nothing set aside left
    new = json.loads((out / "summary.json").read_text())
    assert old["test_acc"] is None and new["test_acc"] == json.loads(
        (ref / "summary.json").read_text())["test_acc"]


def test_a_users_folder_named_like_the_old_soup_is_never_touched(inputs, tmp_path, capsys):
    from conftest import assert_user_error, cli

    out = tmp_path / "soup"
    mine = tmp_path / ".soup.old"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert cli(capsys, *_soup_argv(inputs, out))[0] == 0  # nothing to set aside
    code, _, err = cli(capsys, *_soup_argv(inputs, out))  # would set --out aside there
    assert_user_error(code, err, f"{mine} exists and is not a soup partialft set aside")
    assert (mine / "notes.txt").read_text() == "mine" and (out / "summary.json").is_file()
